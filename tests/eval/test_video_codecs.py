"""vtok.eval.video_codecs: real codec round trips on a tiny clip, the tokenizer through real
.vtok bytes, per-frame scores, the CRF bracket search, clear errors."""

import numpy as np
import pytest
import torch

pytest.importorskip("av")
pytest.importorskip("skimage")

from vtok.codec.container import MAGIC  # noqa: E402
from vtok.codec.raw import RawCoder  # noqa: E402
from vtok.eval import psnr  # noqa: E402
from vtok.eval import video_codecs as vc  # noqa: E402
from vtok.models import create_tokenizer  # noqa: E402


def moving_clip(frames: int = 5, h: int = 64, w: int = 64) -> np.ndarray:
    """Smooth waves drifting 2 pixels a frame: content a codec predicts from the last frame
    (random noise would be mostly lost to 4:2:0 chroma whatever the rate)."""
    y, x = np.mgrid[:h, :w]
    clip = [np.stack([128 + 100 * np.sin(2 * np.pi * (x + 2 * t) / 32 + c)
                      * np.cos(2 * np.pi * y / 24) for c in range(3)], -1)
            for t in range(frames)]
    return np.stack(clip).round().astype(np.uint8)


@pytest.mark.parametrize("codec", [c for c in vc.CODECS if vc.available(c)])
def test_each_codec_round_trips_a_clip_and_more_crf_costs_fewer_bytes(codec):
    clip = moving_clip()
    spec = vc.CODECS[codec]
    fine = vc.code_clip(clip, codec, spec.start - spec.step)
    coarse = vc.code_clip(clip, codec, spec.crf_range[1])
    for coded in (fine, coarse):
        assert coded.frames.shape == clip.shape and coded.frames.dtype == np.uint8
        assert coded.data[4:8] == b"ftyp"  # a real MP4 file
        assert coded.encode_seconds > 0 and coded.decode_seconds > 0
        assert coded.bpp() == len(coded.data) * 8 / (5 * 64 * 64)
    assert len(coarse.data) < len(fine.data)
    a, fine_b, coarse_b = (vc.as_float(c) for c in (clip, fine.frames, coarse.frames))
    assert psnr(a, fine_b).mean() > psnr(a, coarse_b).mean()
    assert psnr(a, fine_b).mean() > 28  # it decodes this clip, not some other pixels


def test_codecs_take_float_tensors_too():
    clip = moving_clip(frames=3)
    as_tensor = vc.as_float(clip)
    assert np.array_equal(vc.as_uint8(as_tensor), clip)
    coded = vc.code_clip(as_tensor, "h264", 20)
    assert coded.frames.shape == clip.shape


def test_unknown_or_missing_codecs_are_refused_by_name(monkeypatch):
    clip = moving_clip(frames=2)
    with pytest.raises(ValueError, match=r"unknown video codec 'vp7' \(known: h264, h265, av1\)"):
        vc.code_clip(clip, "vp7", 30)
    monkeypatch.setitem(vc.CODECS, "fake", vc.VideoCodec("Fake", "libnothing", (0, 51), 20, 6))
    assert not vc.available("fake")
    with pytest.raises(ValueError, match="needs FFmpeg's libnothing encoder, which this PyAV"):
        vc.code_clip(clip, "fake", 30)


def test_bad_crf_odd_sides_and_bad_frames_are_refused():
    with pytest.raises(ValueError, match=r"h264 takes a CRF in \[0, 51\], got 52"):
        vc.code_clip(moving_clip(frames=2), "h264", 52)
    with pytest.raises(ValueError, match="needs even width and height"):
        vc.code_clip(moving_clip(frames=2, w=63), "h264", 30)
    with pytest.raises(ValueError, match=r"uint8 \[T, H, W, 3\]"):
        vc.code_clip(np.zeros((2, 64, 64, 3), np.float32), "h264", 30)


def test_tokenizer_codes_through_real_vtok_bytes():
    torch.manual_seed(0)
    tok = create_tokenizer("test-conv3d")  # x4 space, x4 time, 1000 codes (10 bits)
    clip = moving_clip()
    coded = vc.code_with_tokenizer(tok, clip, RawCoder(tok.codebook_size), fps=25)
    assert coded.data.startswith(MAGIC)
    assert coded.frames.shape == clip.shape and coded.frames.dtype == np.uint8
    index_bits = 2 * 16 * 16 * 10  # 5 frames -> 2 latent frames of 16x16 tokens
    assert index_bits < len(coded.data) * 8 < index_bits + 8 * 200  # plus the file's headers
    expected = tok.decode(tok.encode(vc.as_float(clip)[None]))[0]
    assert np.array_equal(coded.frames, vc.as_uint8(expected))


def test_still_image_tokenizers_are_refused():
    tok = create_tokenizer("test-conv2d")
    with pytest.raises(ValueError, match="codes still images"):
        vc.code_with_tokenizer(tok, moving_clip(frames=2), RawCoder(tok.codebook_size))


class FakeLPIPS(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, a, b):
        return (a - b).abs().flatten(1).mean(1)


def test_frame_scores_per_frame_and_per_transition():
    clip = moving_clip(frames=4)
    scores = vc.frame_scores(clip, clip, FakeLPIPS(), batch=3)
    assert np.isinf(scores["psnr"]).all() and len(scores["psnr"]) == 4
    assert scores["ssim"].tolist() == [1.0] * 4
    assert scores["lpips_alex"].tolist() == [0.0] * 4
    assert scores["flicker"].tolist() == [0.0] * 3
    with pytest.raises(ValueError, match="differ in shape"):
        vc.frame_scores(clip, clip[:3], FakeLPIPS())


def test_bracket_search_finds_crfs_on_both_sides_of_the_targets():
    tried = []

    def rate_at(crf):  # halves every 6 CRF, like x264
        tried.append(crf)
        return 2.0 * 0.5 ** (crf / 6)

    rates = vc.bracket_crfs(rate_at, low=0.05, high=0.3, codec="h264", points=4)
    assert min(rates.values()) <= 0.05 and max(rates.values()) >= 0.3
    assert list(rates) == sorted(rates) and len(rates) >= 4
    assert sorted(tried) == list(rates)  # each CRF coded once
    assert rates == {crf: rate_at(crf) for crf in rates}


def test_bracket_search_stops_at_the_end_of_the_crf_range():
    rates = vc.bracket_crfs(lambda crf: 10.0 - crf / 100, low=0.01, high=0.02, codec="av1",
                            points=3)
    assert max(rates) == 63  # cannot get below 0.01: went as far as the scale goes
    assert len(rates) >= 3
