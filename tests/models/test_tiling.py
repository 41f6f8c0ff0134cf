"""Tiled encode/decode of large images: small images take the untiled path bit for bit; large
ones are normalised with local GroupNorm statistics, the same whether tiled or not."""

import torch

from vtok.models import create_tokenizer
from vtok.models.tiling import (
    LocalGroupNorm,
    _blend,
    decode_tiled,
    encode_tiled,
    spans,
    window_bounds,
)


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


def _seeded_model():
    torch.manual_seed(0)
    model = create_tokenizer("test-conv2d")
    model.train()(_images(2, 64, 64))  # seed the codebook from data, as training does
    return model.eval()


def test_spans_cover_the_map_once_with_clipped_halos():
    cuts = spans(23, 5, 3)
    assert [(s, e) for s, e, _, _ in cuts] == [(0, 4), (4, 9), (9, 13), (13, 18), (18, 23)]
    assert cuts[0][2:] == (0, 7) and cuts[2][2:] == (6, 16) and cuts[-1][2:] == (15, 23)
    assert spans(4, 8, 3) == [(0, 4, 0, 4)]


def test_window_bounds_are_near_equal_and_at_most_the_limit():
    assert window_bounds(10, 64) == [0, 10]
    assert window_bounds(95, 64) == [0, 95]  # under 1.5 windows: one
    assert window_bounds(96, 64) == [0, 48, 96]
    assert window_bounds(200, 64) == [0, 66, 133, 200]
    assert window_bounds(100, 200, most=30) == [0, 25, 50, 75, 100]


def test_blend_interpolates_between_centres_and_holds_beyond_them():
    w = _blend(torch.tensor([0.0, 10.0, 15.0, 20.0, 40.0], dtype=torch.float64),
               torch.tensor([10.0, 20.0], dtype=torch.float64))
    assert w.tolist() == [[1, 0], [1, 0], [0.5, 0.5], [0, 1], [0, 1]]
    assert _blend(torch.tensor([3.0]), torch.tensor([7.0])).tolist() == [[1.0]]


def test_local_statistics_of_one_window_are_plain_groupnorm():
    model = _seeded_model()
    x = _images(2, 32, 48, seed=4) * 2 - 1
    with torch.no_grad(), LocalGroupNorm(model.encoder, ([0, 16], [0, 24])) as norms:
        norms.measure(model.encoder, x, 2)
        local = norms.run(model.encoder, x, (0, 16, 0, 24))
    with torch.no_grad():
        plain = model.encoder(x)
    assert (local - plain).abs().max() < 1e-5


def test_images_under_the_tile_size_and_window_take_the_untiled_path_bit_for_bit():
    model = create_tokenizer("test-conv2d")
    model.tile_size, model.norm_window = 48, 64
    x = _images(2, 48, 45)
    indices, pixels = _untiled(model, x)
    tokens = model.encode(x)
    assert torch.equal(tokens.indices, indices)
    assert torch.equal(model.decode(tokens), pixels)


def test_tiled_coding_reproduces_the_untiled_tokens_and_pixels_with_local_statistics():
    model = _seeded_model()
    x = _images(2, 61, 94, seed=1)  # not a multiple of the grid: padded, then cropped
    padded = torch.nn.functional.pad(x, (0, 0, 0, 1), mode="replicate") * 2 - 1
    bounds = (window_bounds(31, 12), window_bounds(47, 12))  # 3 x 4 windows
    halo = model._halo()
    with torch.no_grad():  # 16x16-cell tiles (2x3 of them) against one tile of everything
        z_tiled = encode_tiled(model.encoder, padded, 2, 16, halo, bounds)
        z_whole = encode_tiled(model.encoder, padded, 2, 64, halo, bounds)
        tiled = model.quantizer(z_tiled.permute(0, 2, 3, 1)).indices
        whole = model.quantizer(z_whole.permute(0, 2, 3, 1)).indices
        assert torch.equal(tiled, whole)
        z_q = model.quantizer.decode(tiled).permute(0, 3, 1, 2)
        out_tiled = decode_tiled(model.decoder, z_q, 2, 16, halo, 4, bounds)
        out_whole = decode_tiled(model.decoder, z_q, 2, 64, halo, 4, bounds)
    assert (out_tiled - out_whole).abs().max() < 1e-4
    # and the statistics are local: they are not those of the whole image
    indices, pixels = _untiled(model, x)
    assert not torch.equal(tiled, indices)


def test_a_change_far_away_leaves_the_local_tokens_alone():
    """With whole-image statistics every token depends on every pixel; with local ones, a
    token depends on its receptive field and the windows around it only."""
    model = _seeded_model()
    model.norm_window = 32  # 16-cell windows on a 2x-downsampling test model
    x = _images(1, 32, 256, seed=5)
    y = x.clone()
    y[..., 192:] = 1 - y[..., 192:]  # the last quarter changes
    a, b = model.encode(x).indices, model.encode(y).indices
    assert not torch.equal(a[..., 64:], b[..., 64:])
    assert torch.equal(a[..., :40], b[..., :40])  # far from the change: unchanged
    model.norm_window = 1024  # one window: whole-image statistics reach everywhere
    a, b = model.encode(x).indices, model.encode(y).indices
    assert not torch.equal(a[..., :40], b[..., :40])


def test_large_images_are_tiled_after_their_windows_are_measured():
    torch.manual_seed(0)
    model = create_tokenizer("test-conv2d")
    x = _images(1, 96, 128, seed=3)
    calls = []
    model.decoder.register_forward_hook(lambda m, i, o: calls.append(tuple(o.shape[-2:])))
    model.tile_size, model.norm_window = 256, 256  # fits one tile and one window
    model.decode(model.encode(x))
    assert calls == [(96, 128)]  # coded whole, as it is
    calls.clear()
    model.tile_size, model.norm_window = 32, 32
    tokens = model.encode(x)
    assert tokens.indices.shape == (1, 48, 64)
    y = model.decode(tokens)
    assert y.shape == x.shape and torch.isfinite(y).all()
    windows, tiles = calls[: 3 * 4], calls[3 * 4 :]
    assert windows == [(32, 32)] * 12 and len(tiles) == 3 * 4  # 3x4 windows, then 3x4 tiles
    assert max(max(c) for c in tiles) < 128
