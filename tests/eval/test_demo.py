import json
from pathlib import Path

import pytest
import torch

from vtok.cli import main
from vtok.eval import codecs
from vtok.models import list_pretrained


@pytest.mark.parametrize("codec", ["jpeg", "webp", "avif"])
def test_classic_codecs_round_trip_real_bytes(codec):
    if not codecs.available(codec):
        pytest.skip(f"{codec} not in this Pillow build")
    image = torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(0))
    small, large = codecs.encode(image, codec, 5), codecs.encode(image, codec, 90)
    assert len(small) < len(large)
    back = codecs.decode(large)
    assert back.shape == image.shape and (back - image).abs().mean() < 0.2
    with pytest.raises(ValueError, match="codec 'png2' is not available"):
        codecs.encode(image, "png2", 5)


def test_demo_writes_results_plots_and_report(tmp_path, capsys, monkeypatch):
    import skimage

    from vtok.eval import demo

    # the val photos astronaut and coffee, straight from the scikit-image wheel: no cache needed
    data = Path(skimage.__file__).parent / "data"
    monkeypatch.setattr(demo, "photo_paths", lambda split, cache=None: [data / "astronaut.png",
                                                                        data / "coffee.png"])
    # the video section has its own tests (test_demo_video.py)
    assert main(["demo", "--out", str(tmp_path / "d"), "--limit", "1", "--no-video"]) == 0
    out = capsys.readouterr().out
    assert "report:" in out and "JPEG" in out
    summary = json.loads((tmp_path / "d" / "results.json").read_text())
    rows = summary["rows"]
    assert {tuple(sorted(r)) for r in rows} == {
        ("bpp", "lpips_alex", "method", "n_images", "psnr", "setting")}
    methods = {r["method"] for r in rows}
    assert {p["name"] for p in list_pretrained()} <= methods
    assert all(r["n_images"] == 1 and r["bpp"] > 0 for r in rows)
    jpeg = sorted((r for r in rows if r["method"] == "JPEG"), key=lambda r: r["bpp"])
    assert [r["setting"] for r in jpeg] == ["q5", "q10", "q25", "q50"]
    assert jpeg[0]["psnr"] < jpeg[-1]["psnr"]
    report = (tmp_path / "d" / "report.html").read_text()
    assert "rd_lpips.png" in report and "crops/0.png" in report
    for name in ("rd_lpips.png", "rd_psnr.png", "crops/0.png"):
        assert (tmp_path / "d" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["demo", "--limit", "0"]) == 2
    assert main(["demo", "--out", str(tmp_path / "d" / "results.json")]) == 2


def test_demo_without_prepared_photos_names_the_command_and_fetches_nothing(tmp_path, capsys,
                                                                            no_fetching):
    assert main(["demo", "--out", str(tmp_path / "d"), "--cache", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert f"default photos not found in {tmp_path / 'empty' / 'photos' / 'val'}" in err
    assert f"run `vtok data prepare --photos --cache {tmp_path / 'empty'}`" in err
    assert not (tmp_path / "d").exists()
