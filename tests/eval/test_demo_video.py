"""The video section of `vtok demo`, with an untrained test-conv3d on a tiny lossless clip."""

import json
import re
from pathlib import Path

import pytest

av = pytest.importorskip("av")

from tests.eval.test_video_codecs import moving_clip  # noqa: E402
from vtok.cli import main  # noqa: E402
from vtok.cli.decode_cmd import write_video  # noqa: E402
from vtok.eval import video_codecs as vc  # noqa: E402
from vtok.eval.demo_video import VideoOptions, video_section  # noqa: E402
from vtok.models.presets import create_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return create_tokenizer("test-conv3d").save_pretrained(
        tmp_path_factory.mktemp("tok") / "tiny-video")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    # 64x64: libx265 in PyAV's wheel has aborted on some smaller frames at high CRFs
    path = tmp_path_factory.mktemp("clips") / "waves.mkv"  # FFV1: exact pixels
    write_video(path, moving_clip(frames=7, h=64, w=70), (10, 1))
    return path


def _photos(monkeypatch):
    import skimage

    from vtok.eval import demo

    # a val photo straight from the scikit-image wheel: no cache needed
    data = Path(skimage.__file__).parent / "data"
    monkeypatch.setattr(demo, "photo_paths", lambda split, cache=None: [data / "coffee.png"])


def _frame_count(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_the_demo_plays_the_clips_side_by_side(tokenizer_dir, clip, tmp_path, capsys,
                                               monkeypatch):
    _photos(monkeypatch)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--limit", "1", "--tokenizers", str(tokenizer_dir),
                 "--clips", str(clip), "--video-frames", "5"]) == 0
    printed = capsys.readouterr().out
    assert "video: 1 clip(s) of 5 frames, 68x64" in printed  # 70 wide, cropped to the x4 grid
    summary = json.loads((out / "results.json").read_text())
    rows = summary["video"]["rows"]
    codecs = [vc.CODECS[c].label for c in vc.CODECS if vc.available(c)]
    assert [r["method"] for r in rows] == ["tiny-video", *codecs]
    assert rows[0]["setting"] == "raw"  # no token prior beside it
    for r in rows:
        assert r["bpp"] > 0 and r["psnr"] > 0 and -1 <= r["ssim"] <= 1
        assert r["lpips_alex"] >= 0 and r["flicker"] >= 0
        assert r["clips"][0]["clip"] == "waves.mkv" and r["clips"][0]["bytes"] > 0
        assert r["method"] in printed
    assert summary["video"]["clips"] == [{"name": "waves.mkv", "frames": 5, "fps": "10",
                                          "size": [68, 64]}]
    assert "flicker" in summary["video"]["definitions"]
    assert {r["method"] for r in summary["rows"]} >= {"tiny-video", "JPEG"}  # photos too
    report = (out / "report.html").read_text()
    videos = re.findall(r"<video src='([^']+)'[^>]*>", report)
    assert len(videos) == 1 + len(rows)  # the source and every reconstruction
    for tag in re.findall(r"<video [^>]*>", report):
        assert all(word in tag for word in ("autoplay", "muted", "loop"))
    for src in videos:
        assert _frame_count(out / src) == 5
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", report)
    assert captions[0].startswith("source")
    for caption, r in zip(captions[1:], rows):
        assert caption.startswith(f"{r['method']} {r['setting']}")
        assert f"{r['clips'][0]['bpp']:.4f} bpp, LPIPS {r['clips'][0]['lpips_alex']:.3f}" in caption


def test_without_clips_or_video_tokenizer_the_section_is_one_line(tokenizer_dir, tmp_path,
                                                                   no_fetching):
    from vtok.losses import LPIPS
    from vtok.models import Tokenizer

    video = [("tiny-video", Tokenizer.from_pretrained(tokenizer_dir), tokenizer_dir)]
    lpips = LPIPS("alex")
    empty = tmp_path / "empty-cache"
    section = video_section(tmp_path / "out", video, lpips, cache=empty)
    assert section.note.startswith("skipped: default clips not found in")
    assert "vtok data prepare --clips" in section.note and "\n" not in section.text()
    assert section.summary() == {"note": section.note}
    still = [("still", create_tokenizer("test-conv2d"), tokenizer_dir)]
    section = video_section(tmp_path / "out", still, lpips, cache=empty)
    assert section.text() == ("video: skipped: no video tokenizer (none of the tokenizers "
                              "codes clips)")
    assert not (tmp_path / "out").exists()


def test_no_video_skips_the_section_and_options_are_checked(tokenizer_dir, tmp_path, capsys,
                                                            monkeypatch):
    _photos(monkeypatch)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--limit", "1", "--tokenizers", str(tokenizer_dir),
                 "--no-video"]) == 0
    assert "video: skipped: not asked for (--no-video)" in capsys.readouterr().out
    assert "<h2>Video</h2>\n<p>skipped: not asked for (--no-video)</p>" in (
        out / "report.html").read_text()
    assert json.loads((out / "results.json").read_text())["video"] == {
        "note": "skipped: not asked for (--no-video)"}
    assert main(["demo", "--out", str(out), "--video-frames", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least 16"):
        VideoOptions(side=8)


@pytest.mark.parametrize("codec", list(vc.CODECS))
@pytest.mark.parametrize("target_crf", [0.2, 7.4, 33.6, 50.9, 70.0])
def test_closest_crf_finds_the_crf_nearest_in_ratio(codec, target_crf):
    lo, hi = vc.CODECS[codec].crf_range
    tried = []

    def rate_at(crf):  # rates halve every 6 CRF steps, as they roughly do
        tried.append(crf)
        return 2.0 ** (-crf / 6)

    crf = vc.closest_crf(rate_at, 2.0 ** (-target_crf / 6), codec)
    assert crf == min(max(round(target_crf), lo), hi)
    assert len(tried) == len(set(tried)) and len(tried) <= 12  # no CRF coded twice
