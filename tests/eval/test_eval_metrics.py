"""The metrics `vtok eval` adds, against known values: MS-SSIM, LPIPS (VGG as well as Alex),
the feature Fréchet distance, token corruption and the OCR of a rendered word."""

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vtok.eval import ms_ssim
from vtok.eval.features import GaussianStats, frechet_distance
from vtok.eval.robustness import corrupt
from vtok.models import create_tokenizer


def photo_like(size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, size // 8, size // 8, generator=g)
    fine = torch.rand(1, 3, size, size, generator=g) * 0.2
    return (F.interpolate(coarse, size=(size, size), mode="bilinear") * 0.8 + fine).clamp(0, 1)


def test_ms_ssim_is_one_for_identical_images_and_drops_with_noise():
    x = photo_like(176)
    assert ms_ssim(x, x).item() == pytest.approx(1.0, abs=1e-9)
    noisy = (x + torch.randn_like(x) * 0.05).clamp(0, 1)
    noisier = (x + torch.randn_like(x) * 0.2).clamp(0, 1)
    assert 0 < ms_ssim(x, noisier).item() < ms_ssim(x, noisy).item() < 1


def test_ms_ssim_refuses_images_too_small_for_five_scales():
    with pytest.raises(ValueError, match="at least 161 pixels"):
        ms_ssim(torch.rand(1, 3, 128, 128), torch.rand(1, 3, 128, 128))


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_is_zero_with_itself_and_grows_with_blur(net):
    from vtok.losses import LPIPS

    lpips = LPIPS(net)
    x = photo_like(64)
    blurred = [F.avg_pool2d(x, k, 1, k // 2, count_include_pad=False) for k in (3, 5, 9)]
    scores = [lpips(x, b).item() for b in blurred]
    assert lpips(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert 0 < scores[0] < scores[1] < scores[2]


def test_frechet_distance_known_values():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    shift = np.array([1.0, 2.0, 0.0])
    assert frechet_distance(a, a + shift) == pytest.approx(5.0, rel=1e-9)
    # N(0, I) against N(0, 4I) in 3 dimensions: tr(I + 4I - 2 * 2I) = 3
    b = rng.normal(size=(200000, 3)) * 2
    c = rng.normal(size=(200000, 3))
    assert frechet_distance(c, b) == pytest.approx(3.0, rel=0.02)
    stats = GaussianStats()
    for chunk in np.array_split(a, 7):  # streamed in pieces: the same as all at once
        stats.add(chunk)
    assert frechet_distance(stats, a + shift) == pytest.approx(5.0, rel=1e-9)


def test_corrupt_replaces_the_asked_fraction_with_valid_codes():
    tok = create_tokenizer("test-conv2d")
    tokens = tok.encode(photo_like(32).repeat(2, 1, 1, 1))
    g = torch.Generator().manual_seed(0)
    damaged = corrupt(tokens, 0.25, tok.codebook_size, g)
    per_image = tokens.indices[0].numel()
    changed = (damaged.indices != tokens.indices).flatten(1).sum(1)
    assert (changed <= round(0.25 * per_image)).all() and (changed > 0).all()
    assert damaged.indices.min() >= 0 and damaged.indices.max() < tok.codebook_size
    assert torch.equal(corrupt(tokens, 0.0, tok.codebook_size, g).indices, tokens.indices)
    assert tok.decode(damaged).shape == (2, 3, 32, 32)


def test_ocr_reads_a_rendered_word_at_32_px():
    from vtok.eval.text_fidelity import WordReader, mark_readable, render

    item = render(photo_like(128)[0], 32, random.Random(3), max_words=2)
    assert item.words and all(w.size == 32 for w in item.words)
    reader = WordReader()
    read = reader.read(item.pixels, [w.box for w in item.words])
    assert [r.lower() for r in read] == [w.text.lower() for w in item.words]
    mark_readable([item], reader)
    assert all(item.readable)


def test_edit_distance():
    from vtok.eval.text_fidelity import edit_distance, normalized_edit_distance

    assert edit_distance("kitten", "sitting") == 3
    assert normalized_edit_distance("Paris", "paris ") == 0.0
    assert normalized_edit_distance("river", "") == 1.0
