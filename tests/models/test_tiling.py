"""Tiled encode/decode of large images: small images take the untiled path bit for bit, tiled
runs with whole-map GroupNorm statistics reproduce the untiled tokens and pixels."""

import torch

from vtok.models import create_tokenizer
from vtok.models.tiling import sample_windows, spans


def _images(b=1, h=64, w=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    # smooth structure plus noise: a photo-like map with large areas of one colour
    base = torch.rand(b, 3, h // 16, w // 16, generator=g)
    x = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear")
    return (x + 0.1 * torch.rand(b, 3, h, w, generator=g)).clamp(0, 1)


def _untiled(model, x):
    with torch.no_grad():
        indices = model._quantize(x, tiled=False).indices
        z_q = model.quantizer.decode(indices)
        return indices, model._to_pixels(z_q, x.shape[-2:], tiled=False).clamp(0, 1)


def test_spans_cover_the_map_once_with_clipped_halos():
    cuts = spans(23, 5, 3)
    assert [(s, e) for s, e, _, _ in cuts] == [(0, 4), (4, 9), (9, 13), (13, 18), (18, 23)]
    assert cuts[0][2:] == (0, 7) and cuts[2][2:] == (6, 16) and cuts[-1][2:] == (15, 23)
    assert spans(4, 8, 3) == [(0, 4, 0, 4)]


def test_sample_windows_are_the_whole_map_when_it_fits():
    assert sample_windows((10, 20), 4, 2, 200) == [(0, 0, 10, 20)]
    windows = sample_windows((40, 60), 4, 2, 400)
    assert 1 < len(windows) <= 400 // 64 and {w[2:] for w in windows} == {(8, 8)}
    assert all(0 <= y <= 32 and 0 <= x <= 52 for y, x, _, _ in windows)


def test_images_up_to_the_tile_size_take_the_untiled_path_bit_for_bit():
    model = create_tokenizer("test-conv2d")
    model.tile_size = 48
    x = _images(2, 48, 45)
    indices, pixels = _untiled(model, x)
    tokens = model.encode(x)
    assert torch.equal(tokens.indices, indices)
    assert torch.equal(model.decode(tokens), pixels)


def test_tiled_coding_reproduces_the_untiled_tokens_and_pixels():
    from vtok.models.tiling import decode_tiled, encode_tiled

    torch.manual_seed(0)
    model = create_tokenizer("test-conv2d")
    model.train()(_images(2, 64, 64))  # seed the codebook from data, as training does
    model.eval()
    x = _images(2, 61, 94, seed=1)  # not a multiple of the grid: padded, then cropped
    indices, pixels = _untiled(model, x)
    padded = torch.nn.functional.pad(x, (0, 0, 0, 1), mode="replicate") * 2 - 1
    with torch.no_grad():  # 16x16-cell tiles (2x3 of them), statistics of the whole map
        z = encode_tiled(model.encoder, padded, 2, 16, model._halo(), budget=10**6)
        tiled = model.quantizer(z.permute(0, 2, 3, 1)).indices
        assert torch.equal(tiled, indices)
        z_q = model.quantizer.decode(tiled).permute(0, 3, 1, 2)
        out = decode_tiled(model.decoder, z_q, 2, 16, model._halo(), 4, budget=10**6)
    out = ((out + 1) / 2)[..., :61, :94].clamp(0, 1)
    assert (out - pixels).abs().max() < 1e-4


def test_large_images_are_tiled_with_statistics_from_a_sample():
    torch.manual_seed(0)
    model = create_tokenizer("test-conv2d")
    x = _images(1, 96, 128, seed=3)
    calls = []
    model.decoder.register_forward_hook(lambda m, i, o: calls.append(tuple(o.shape[-2:])))
    model.tile_size, model.stats_pixels = 32, 128 * 128  # whole image fits the sample
    model.decode(model.encode(x))
    assert calls == [(96, 128)]  # coded whole: the sample would have held all of it
    calls.clear()
    model.stats_pixels = 48 * 48
    tokens = model.encode(x)
    assert tokens.indices.shape == (1, 48, 64)
    y = model.decode(tokens)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert len(calls) == 1 + 3 * 4 and max(max(c) for c in calls) < 128  # sample, 3x4 tiles


def test_tile_local_groupnorm_statistics_would_shift_the_result():
    """What the shared statistics guard against: each tile normalised on its own."""
    from vtok.models.tiling import decode_tiled

    torch.manual_seed(0)
    model = create_tokenizer("test-conv2d").eval()
    model.train()(_images(2, 64, 64))
    model.eval()
    x = _images(1, 64, 96, seed=2)
    _, pixels = _untiled(model, x)
    z = model.quantizer(model.encoder(x * 2 - 1).permute(0, 2, 3, 1)).z_q.permute(0, 3, 1, 2)
    with torch.no_grad():
        shared = decode_tiled(model.decoder, z, 2, 16, model._halo(), 4, budget=10**6)
        local = torch.cat([torch.cat([model.decoder(z[..., r:r + 16, c:c + 16])
                                      for c in range(0, 48, 16)], -1)
                           for r in range(0, 32, 16)], -2)
    assert ((shared + 1) / 2).clamp(0, 1).sub(pixels).abs().max() < 1e-4
    assert ((local + 1) / 2).clamp(0, 1).sub(pixels).abs().max() > 1e-2
