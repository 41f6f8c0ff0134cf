"""`vtok eval` end to end on tiny tokenizers and small images: the report, and one clear message
(non-zero exit, nothing written) for each kind of bad input."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vtok.cli import main
from vtok.eval.codecs import to_pil


def write_photos(folder: Path, count: int, size: int = 64) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for i in range(count):
        coarse = torch.rand(1, 3, size // 8, size // 8, generator=g)
        image = F.interpolate(coarse, size=(size, size + 8), mode="bilinear")[0]
        to_pil(image).save(folder / f"photo{i}.png")
    return folder


def test_eval_report_on_two_tiny_tokenizers(tmp_path, capsys):
    from vtok.eval.compare import EvalConfig, evaluate

    images = write_photos(tmp_path / "imgs", 3)
    (images / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "report"
    results = evaluate(EvalConfig(
        tokenizers=["test-conv2d", "test-titok"], images=images, out=out, size=64,
        batch_size=2, token_counts=[2, 4, 8], codecs=["jpeg", "avif"],
        qualities={"jpeg": [5, 50], "avif": [0, 20, 60]}, text_sizes=[8, 16], text_photos=1,
        text_words=2, fractions=[0.1, 0.5], progress=False))
    rows = results["rows"]
    assert [(r["method"], r["setting"]) for r in rows] == [
        ("test-conv2d", "all tokens"), ("test-titok", "2 tokens"), ("test-titok", "4 tokens"),
        ("test-titok", "8 tokens"), ("JPEG", "q5"), ("JPEG", "q50"), ("AVIF", "q0"),
        ("AVIF", "q20"), ("AVIF", "q60")]
    assert results["images"] == ["photo0.png", "photo1.png", "photo2.png"]
    assert [Path(s["file"]).name for s in results["skipped"]] == ["broken.jpg"]
    conv = rows[0]
    # 64x64 -> a 32x32 grid (test-conv2d downsamples by 2) of 4-bit indices: 1 bpp of indices
    assert conv["bpp_index"] == pytest.approx(1.0)
    assert conv["bpp_file_raw"] > conv["bpp_index"] and conv["bpp"] == conv["bpp_file_raw"]
    assert conv["coding"] == "raw" and conv["bpp_file_entropy"] is None  # no prior
    titok = rows[1:4]
    assert [r["bpp_index"] for r in titok] == pytest.approx([2 * 4 / 4096, 4 * 4 / 4096,
                                                             8 * 4 / 4096])
    for r in rows:
        assert r["images"] == 3 and r["bpp"] > 0 and 0 < r["ssim"] <= 1
        assert r["lpips_alex"] >= 0 and r["lpips_vgg"] >= 0 and r["ms_ssim"] is None
        assert r["frechet_effnet"] is not None and r["frechet_effnet"] >= 0
        assert r["encode_images_per_s"] > 0 and r["decode_images_per_s"] > 0
        assert set(r["text"]) == {"8", "16"}
    for r in rows[:4]:
        assert 0 < r["codebook_usage"] <= 1 and 1 <= r["codebook_perplexity"] <= 16
    assert rows[4]["codebook_usage"] is None
    # the probe runs on each tokenizer's largest count only
    probed = [r for r in rows if r["robustness_lpips_alex"]]
    assert [(r["method"], r["setting"]) for r in probed] == [("test-conv2d", "all tokens"),
                                                             ("test-titok", "8 tokens")]
    assert set(probed[0]["robustness_lpips_alex"]) == {"0.1", "0.5"}
    bd = {e["tokenizer"]: e for e in results["bd"]}
    assert "single rate point" in bd["test-conv2d"]["note"]
    assert set(bd["test-titok"]) >= {"bd_rate_lpips_alex", "bd_lpips_alex", "bd_psnr"}
    assert any("MS-SSIM not measured" in n for n in results["notes"])
    assert any("face fidelity is not measured" in n for n in results["notes"])
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["rows"] == json.loads(json.dumps(rows))
    report = (out / "report.html").read_text()
    for name in ("rd_psnr.png", "rd_lpips_alex.png", "rd_lpips_vgg.png", "rd_frechet_effnet.png",
                 "text_accuracy.png", "robustness.png", "images/0-original.png",
                 "images/text0-original.png"):
        assert name in report
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "not FID" in report and "broken.jpg" in report
    assert not list(tmp_path.glob(".report.tmp-*"))


def test_eval_cli_prints_the_table(tmp_path, capsys):
    images = write_photos(tmp_path / "imgs", 2, size=40)
    code = main(["eval", "-t", "test-conv2d", "--images", str(images), "--out",
                 str(tmp_path / "r"), "--size", "32", "--codecs", "--no-text",
                 "--no-features", "--no-robustness"])
    assert code == 0
    out = capsys.readouterr().out
    assert "test-conv2d" in out and "report:" in out
    assert (tmp_path / "r" / "report.html").exists()


def run_failing(argv, capsys, out: Path) -> str:
    code = main(["eval", *argv, "--out", str(out), "--no-text", "--no-features"])
    assert code == 2
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.tmp-*"))
    return capsys.readouterr().err


def test_eval_bad_inputs_one_clear_message_each(tmp_path, capsys):
    images = write_photos(tmp_path / "imgs", 1)
    out = tmp_path / "never"
    err = run_failing(["-t", "no-such-tokenizer", "--images", str(images)], capsys, out)
    assert "unknown tokenizer 'no-such-tokenizer'" in err and err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    err = run_failing(["-t", "test-conv2d", "--images", str(tmp_path / "empty")], capsys, out)
    assert "no image files in it" in err
    err = run_failing(["-t", "test-conv2d", "--images", str(tmp_path / "nope")], capsys, out)
    assert "not a folder" in err
    err = run_failing(["-t", "test-titok", "--images", str(images), "--size", "256"], capsys,
                      out)
    assert "tokenizer 'test-titok' cannot code 256x256 images" in err
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.png").write_bytes(b"\x89PNG broken")
    err = run_failing(["-t", "test-conv2d", "--images", str(junk), "--size", "32", "--codecs"],
                      capsys, out)
    assert "none of the 1 image files could be read" in err and "a.png" in err
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["eval", "-t", "test-conv2d", "--images", str(images), "--out", str(target)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err and target.read_text() == "x"


def test_qualities_option(tmp_path, capsys):
    from vtok.cli.eval_cmd import parse_qualities
    from vtok.eval.methods import QUALITIES

    sweeps = parse_qualities(["avif=30,0,10", "jpeg=5"])
    assert sweeps["avif"] == [0, 10, 30] and sweeps["jpeg"] == [5]
    assert sweeps["webp"] == QUALITIES["webp"] and parse_qualities(None) is None
    for bad in ["png=5", "avif=", "avif=x", "avif=101"]:
        with pytest.raises(ValueError, match="--qualities"):
            parse_qualities([bad])
    out = tmp_path / "never"
    assert main(["eval", "-t", "test-conv2d", "--qualities", "avif=low", "--out", str(out)]) == 2
    assert "--qualities 'avif=low'" in capsys.readouterr().err and not out.exists()


class NotATensor:  # a class torch.load(weights_only=True) must refuse to build
    pass


def test_eval_refuses_tokenizer_folders_that_do_not_load(tmp_path, capsys):
    from vtok.models import create_tokenizer

    images = write_photos(tmp_path / "imgs", 1)
    out = tmp_path / "never"
    conv, titok = tmp_path / "conv", tmp_path / "titok"
    create_tokenizer("test-conv2d").save_pretrained(conv)
    create_tokenizer("test-titok").save_pretrained(titok)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(conv, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"garbage" * 10)
    other = tmp_path / "other"  # a conv2d config with a titok's weights
    shutil.copytree(conv, other)
    shutil.copy(titok / "model.safetensors", other / "model.safetensors")
    for folder, message in ((corrupt, "not a readable safetensors file"),
                            (other, "weights do not fit this conv2d tokenizer")):
        err = run_failing(["-t", "test-conv2d", str(folder), "--images", str(images),
                           "--size", "32", "--codecs"], capsys, out)
        assert f"vtok eval: tokenizer '{folder}': " in err and message in err, err
        assert err.count("\n") == 1


def test_eval_refuses_inception_weights_it_cannot_use(tmp_path, capsys):
    images = write_photos(tmp_path / "imgs", 1)
    out = tmp_path / "never"
    pickled = tmp_path / "pickled.pt"
    torch.save({"w": torch.zeros(2), "extra": NotATensor()}, pickled)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 not a checkpoint")
    for path, message in ((pickled, "refused: it holds a Python object"),
                          (corrupt, "not a readable PyTorch checkpoint"),
                          (tmp_path / "absent.pt", "no such file")):
        err = run_failing(["-t", "test-conv2d", "--images", str(images), "--size", "32",
                           "--codecs", "--inception-weights", str(path)], capsys, out)
        assert f"vtok eval: --inception-weights {path}: {message}" in err, err
        assert err.count("\n") == 1  # one line, not torch's page of advice
    assert "NotATensor" in run_failing(["-t", "test-conv2d", "--images", str(images),
                                        "--inception-weights", str(pickled)], capsys, out)
    tensors = tmp_path / "tensors.pt"  # loads, but is no Inception-v3
    torch.save({"w": torch.zeros(2)}, tensors)
    err = run_failing(["-t", "test-conv2d", "--images", str(images), "--size", "32", "--codecs",
                       "--inception-weights", str(tensors)], capsys, out)
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        assert "real FID needs torch-fidelity" in err
    else:
        assert f"{tensors}: not the weights of FID's Inception-v3" in err
