"""`vtok reduce-bench` on tiny models: JSON layout, the unreduced baseline, fidelity, errors."""

import json

import pytest
import torch

from vtok.cli import main
from vtok.eval.codecs import to_pil
from vtok.models import create_tokenizer

pytest.importorskip("timm")

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2,
        "num_classes": 10}
FAST = ["--keeps", "0.5", "--batch-sizes", "1", "2", "--repeats", "1", "--warmup", "1",
        "--min-time", "0", "--threads", "1"]


def bench(tmp_path, *extra: str, png: str = "speedup") -> dict:
    out = tmp_path / "out"
    assert main(["reduce-bench", *FAST, "--out", str(out), *extra]) == 0
    assert (out / f"{png}.png").stat().st_size > 0
    return json.loads((out / "results.json").read_text())


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i, (h, w) in enumerate([(80, 96), (96, 72)]):
        to_pil(torch.rand(3, h, w, generator=g)).save(folder / f"{i}.png")
    return folder


def test_random_weights_give_speed_only(tmp_path, capsys):
    summary = bench(tmp_path, "--model", "vit_tiny_patch16_224", "--model-kwargs",
                    json.dumps(TINY), "--methods", "tome", "random")
    rows = summary["rows"]
    assert [(r["method"], r["keep"]) for r in rows] == [("none", 1.0), ("tome", 0.5),
                                                       ("random", 0.5)]
    base = rows[0]
    assert base["speedup_b1"] == 1.0 and base["speedup_b2"] == 1.0
    assert base["tokens"] == 17 and base["tokens_per_block"] == [17, 17]
    for row in rows[1:]:
        assert row["tokens_per_block"] == [17, 9] and 0 < row["gflops"] < base["gflops"]
        assert row["images_per_s_b1"] > 0 and row["speedup_b2"] > 0
    assert summary["subject"]["weights"] == "random" and summary["threads"] == 1
    assert summary["fidelity_columns"] == ["agreement_center", "agreement_random"]
    assert all(r[c] is None for r in rows for c in summary["fidelity_columns"])
    assert "fidelity needs a trained model" in summary["fidelity_note"]
    out = capsys.readouterr().out
    assert "speed-up b2" in out and "note: fidelity needs a trained model" in out


def test_methods_take_options(tmp_path):
    summary = bench(tmp_path, "--model", "vit_tiny_patch16_224", "--model-kwargs",
                    json.dumps(TINY), "--methods", "tome", "tome:round_share=0.25",
                    "tome:similarity=keys,proportional=false", "--repeats", "3")
    rows = summary["rows"]
    assert [r["method"] for r in rows] == ["none", "tome", "tome:round_share=0.25",
                                           "tome:similarity=keys,proportional=false"]
    assert rows[2]["tokens_per_block"] == rows[3]["tokens_per_block"] == [17, 9]
    # speed-ups are medians of per-round ratios to the base timings beside each variant
    assert rows[0]["speedup_b2"] == 1.0 and rows[0]["speedup_quartiles_b2"] == [1.0, 1.0]
    for row in rows[1:]:
        q1, q3 = row["speedup_quartiles_b2"]
        assert 0 < q1 <= row["speedup_b2"] <= q3


def test_titok_fidelity(tmp_path, photos):
    torch.manual_seed(0)
    create_tokenizer("test-titok", depth=2).save_pretrained(tmp_path / "tok")
    summary = bench(tmp_path, "--titok", str(tmp_path / "tok"), "--images", str(photos),
                    "--image-size", "64", "--methods", "tome", "pool2d")
    rows = summary["rows"]
    assert summary["subject"]["kind"] == "titok" and summary["fidelity_note"] is None
    assert summary["images"]["count"] == 2 and summary["images"]["size"] == 64
    assert rows[0]["tokens"] == 64 + 8 and rows[1]["tokens"] == 32 + 8
    for row in rows:
        assert row["psnr"] > 0 and 0 <= row["lpips_alex"] <= 2


def test_classifier_agreement(tmp_path, photos):
    timm = pytest.importorskip("timm")
    from vtok.eval.classifier import save_classifier

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY)
    save_classifier(model, tmp_path / "clf", "vit_tiny_patch16_224", TINY)
    summary = bench(tmp_path, "--classifier", str(tmp_path / "clf"), "--images", str(photos),
                    "--methods", "cls_attn", "--random-crops", "3")
    rows = summary["rows"]
    assert summary["subject"]["weights"] == "trained"
    assert summary["images"]["random_crops"] == 6
    assert rows[0]["agreement_center"] == 1.0 and rows[0]["agreement_random"] == 1.0
    assert 0 <= rows[1]["agreement_center"] <= 1 and 0 <= rows[1]["agreement_random"] <= 1


@pytest.mark.parametrize("extra, message", [
    (["--methods", "tome", "nope"], "unknown reducer 'nope'"),
    (["--methods", "tome:round_share=0.9"], "round_share must be in (0, 0.5], got 0.9"),
    (["--methods", "tome:round_share"], "options look like NAME:option=value"),
    (["--methods", "tome:similarity=values"], "similarity must be 'tokens' or 'keys'"),
    (["--methods", "tome:proportional=1"], "proportional must be true or false, got 1"),
    (["--keeps", "0.5", "1.5"], "keep must be in (0, 1], got 1.5"),
    (["--batch-sizes", "0"], "--batch-sizes must be at least 1, got 0"),
    (["--model-kwargs", "[1]"], "option --model-kwargs: expected dict, got [1]"),
    (["--keeps", "0.5", "x"], "option --keeps: expected float, got x"),
    (["--layer", "1.5"], "option --layer: expected int or null, got 1.5"),
    (["--repeats", "true"], "option --repeats: expected int, got True"),
    (["--bogus", "1"], "unrecognized arguments: --bogus 1"),
    (["--model", "no_such_vit"], "timm has no model named 'no_such_vit'"),
    (["--titok", "x", "--classifier", "y"], "give one of --titok, --classifier and --vlm"),
    (["--vlm", "no/such/folder"], "no/such/folder: not a VLM folder"),
    (["--vlm", "benchmarks/vlm", "--where", "lm"], "--where 'lm': choose from vision"),
    (["--model", "vit_tiny_patch16_224", "--model-kwargs", json.dumps(TINY), "--layer", "2"],
     "layers must be a block index or a list of distinct block indices in [0, 2), got 2"),
])
def test_bad_input_exits_2_and_names_it(tmp_path, capsys, extra, message):
    assert main(["reduce-bench", "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_vlm_agreement_and_first_token_kl(tmp_path, photos):
    pytest.importorskip("transformers")
    from tests.eval.test_vlm_model import tiny_vlm
    from vtok.eval.vlm_model import save_vlm

    model, tokenizer = tiny_vlm()
    save_vlm(model, tokenizer, tmp_path / "vlm")
    summary = bench(tmp_path, "--vlm", str(tmp_path / "vlm"), "--images", str(photos),
                    "--methods", "fastv", "divprune", "--keeps", "1.0", "0.25",
                    "--where", "projector", "llm", "--layer", "1", "--random-crops", "2",
                    png="agreement")
    rows = {row["variant"]: row for row in summary["rows"]}
    assert summary["crops"] == 4 and summary["subject"]["visual_tokens"] == 16
    # the baselines are always there; fastv runs inside the LM only
    assert {"random llm@1 keep 0.25", "pool2d projector keep 0.25"} <= set(rows)
    assert not any(v.startswith("fastv projector") for v in rows)
    for label, row in rows.items():
        if row["keep"] == 1.0:  # keeping everything changes nothing, bit for bit
            assert row["agreement"] == 1.0 and row["first_token_kl"] == 0.0, label
        else:
            assert 0 <= row["agreement"] <= 1 and row["first_token_kl"] >= 0
            assert row["visual_kept"] < 1
        assert row["speedup_b1"] > 0 and row["prefill_ms_b2"] > 0


def test_options_from_a_config_file_and_print_config(tmp_path, capsys):
    from vtok.cli.reduce_bench_cmd import ReduceBenchOptions, read_options

    argv = ["--methods", "tome", "random", "--keeps", "0.5", "--model-kwargs",
            json.dumps(TINY), "--out", str(tmp_path / "out"), "--images", str(tmp_path)]
    options = read_options(argv)
    assert options == ReduceBenchOptions(methods=["tome", "random"], keeps=[0.5],
                                         model_kwargs=TINY, out=tmp_path / "out",
                                         images=tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["reduce-bench", *argv, "--print_config"])
    assert stop.value.code == 0
    (tmp_path / "bench.yaml").write_text(capsys.readouterr().out)
    assert read_options(["--config", str(tmp_path / "bench.yaml")]) == options
    again = read_options(["--config", str(tmp_path / "bench.yaml"), "--batch-sizes", "4"])
    assert again.batch_sizes == [4] and again.methods == ["tome", "random"]
    assert not (tmp_path / "out").exists()


def test_titok_fidelity_without_prepared_assets_names_the_command(tmp_path, photos, capsys,
                                                                  no_fetching):
    create_tokenizer("test-titok").save_pretrained(tmp_path / "tok")
    empty = tmp_path / "empty"
    common = ["reduce-bench", *FAST, "--titok", str(tmp_path / "tok"), "--cache", str(empty),
              "--out", str(tmp_path / "out")]
    assert main(common) == 2
    err = capsys.readouterr().err
    assert f"default photos not found in {empty / 'photos' / 'val'}" in err
    assert f"run `vtok data prepare --photos --cache {empty}`" in err
    assert main([*common, "--images", str(photos)]) == 2  # before any timing
    assert f"run `vtok data prepare --lpips --cache {empty}`" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_reduction_core_imports_no_data_training_or_evaluation_code():
    import subprocess
    import sys

    script = ("import sys, vtok.reduce\n"
              "print(sorted(m for m in sys.modules if m.startswith(('vtok.data', 'vtok.train',"
              " 'vtok.eval', 'vtok.losses', 'vtok.cli'))))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
