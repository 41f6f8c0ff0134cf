"""benchmarks/video_codecs.py: end to end on a tiny clip with the untrained test-conv3d."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("av")
pytest.importorskip("skimage")
pytest.importorskip("matplotlib")

from tests.eval.test_video_codecs import moving_clip  # noqa: E402
from vtok.cli.decode_cmd import write_video  # noqa: E402
from vtok.eval.video_compare import prepare  # noqa: E402

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "video_codecs.py"


def _script():
    spec = importlib.util.spec_from_file_location("video_codecs_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["video_codecs_bench"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_clip(tmp_path):
    path = tmp_path / "waves.mkv"  # FFV1: the benchmark reads back exactly these pixels
    write_video(path, moving_clip(frames=6, h=66, w=70), (25, 1))
    return path


def test_main_writes_the_table_json_and_plots(tiny_clip, tmp_path, capsys):
    out = tmp_path / "results" / "video.json"
    rc = _script().main(["--tokenizer", "test-conv3d", "--clips", str(tiny_clip),
                         "--frames", "5", "--codecs", "h264", "av1", "--points", "3",
                         "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "1 clip(s), 5 frames of 68x64" in printed  # 70x66 cropped to the x4 grid
    assert "untrained" in printed and "H.264 (libx264)" in printed
    summary = json.loads(out.read_text())
    rows = summary["rows"]
    tokenizer = [r for r in rows if r["method"] == "tokenizer"]
    assert [r["setting"] for r in tokenizer] == ["raw"]  # no prior beside a bare preset
    assert tokenizer[0]["bpp"] > 2 * 16 * 17 * 10 / (5 * 64 * 68)  # index bits plus headers
    for label in ("H.264 (libx264)", "AV1 (libsvtav1)"):
        mine = [r for r in rows if r["method"] == label]
        assert len(mine) >= 3
        crfs = [int(r["setting"].split()[1]) for r in mine]
        assert crfs == sorted(crfs, reverse=True)  # listed from fewest bits up
        assert [r["bpp"] for r in mine] == sorted(r["bpp"] for r in mine)
    for r in rows:
        assert r["clips"][0]["clip"] == "waves.mkv" and r["clips"][0]["bytes"] > 0
        assert r["encode_fps"] > 0 and r["decode_fps"] > 0
        assert r["psnr"] > 0 and -1 <= r["ssim"] <= 1 and r["lpips_alex"] >= 0
        assert r["flicker"] >= 0
    assert summary["size"] == [68, 64] and summary["clips"][0]["frames"] == 5
    assert summary["tokenizer"]["trained"] is False
    assert "|(r_t - r_{t-1}) - (s_t - s_{t-1})|" in summary["definitions"]["flicker"]
    for suffix in ("_lpips.png", "_psnr.png"):
        assert (tmp_path / "results" / f"video{suffix}").read_bytes()[:4] == b"\x89PNG"


def test_still_image_and_unknown_tokenizers_are_refused(tiny_clip, tmp_path, capsys):
    bench = _script()
    for name, message in [("test-conv2d", "codes still images"),
                          ("no-such-thing", "neither a tokenizer folder")]:
        rc = bench.main(["--tokenizer", name, "--clips", str(tiny_clip),
                         "--json", str(tmp_path / "x.json")])
        assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_prepare_crops_to_the_grid_or_scales_to_cover_a_size():
    frames = torch.rand(2, 3, 50, 90)
    assert prepare(frames, None, 4).shape == (2, 48, 88, 3)
    scaled = prepare(frames, (40, 40), 4)  # scaled to 40x72, then the middle 40x40
    assert scaled.shape == (2, 40, 40, 3) and scaled.dtype == np.uint8
    grey = torch.full((1, 3, 50, 90), 100 / 255)
    assert (prepare(grey, (40, 40), 4) == 100).all()  # scaling keeps a flat colour
