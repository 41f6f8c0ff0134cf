"""Real FID from a local Inception-v3 weights file (`vtok eval --inception-weights`). No
Inception weights ship offline, so the tests use a random-weight Inception-v3 with the FID
network's key names: the values mean nothing, but the pipeline and the arithmetic are checked
against torchmetrics' FID on the same file."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vtok.eval.features import InceptionFeatures, frechet_distance

torchvision = pytest.importorskip("torchvision")
pytest.importorskip("torch_fidelity")


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """torchvision's Inception-v3 with the FID network's 1008 classes and no aux head has
    exactly the keys of torch-fidelity's `pt_inception-2015-12-05` file. Its batch-norm
    statistics are set from one batch, so that the random features neither vanish nor blow
    up."""
    torch.manual_seed(0)
    model = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False,
                                            num_classes=1008)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a plain average over the batches seen
            module.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 299, 299) * 2 - 1)
    path = tmp_path_factory.mktemp("inception") / "inception.pt"
    torch.save(model.state_dict(), path)
    return path


def smooth_images(count: int, seed: int, size: int = 48) -> torch.Tensor:
    """Images on the 8-bit grid (k / 255), so rounding to 8 bits loses nothing."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, size // 8, size // 8, generator=g)
    images = F.interpolate(coarse, size=(size, size), mode="bilinear")
    return (images * 255).round() / 255


def test_fid_equals_torchmetrics_on_the_same_weights(inception_file):
    """At 299x299 neither library resizes (torchmetrics resizes other sizes with antialiasing,
    torch-fidelity as TensorFlow 1 did, which the published FID numbers used)."""
    tm_fid = pytest.importorskip("torchmetrics.image.fid")
    real = smooth_images(8, seed=1, size=299)
    fake = (F.avg_pool2d(real, 3, 1, 1) * 255).round() / 255  # blurred
    features = InceptionFeatures(inception_file)
    ours = frechet_distance(features(real), features(fake))
    metric = tm_fid.FrechetInceptionDistance(feature=2048,
                                             feature_extractor_weights_path=str(inception_file))
    metric.update((real * 255).round().to(torch.uint8), real=True)
    metric.update((fake * 255).round().to(torch.uint8), real=False)
    reference = float(metric.compute())
    assert ours > 0 and reference > 0
    assert ours == pytest.approx(reference, rel=1e-5)
    assert frechet_distance(features(real), features(real)) == pytest.approx(0, abs=1e-6 * ours)


def test_safetensors_weights_give_the_same_features(inception_file, tmp_path):
    state = torch.load(inception_file, weights_only=True)
    path = tmp_path / "inception.safetensors"
    save_file(state, str(path))
    images = smooth_images(2, seed=3)
    assert torch.equal(InceptionFeatures(path)(images), InceptionFeatures(inception_file)(images))


def test_weights_of_another_network_are_refused_by_name(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=r"resnet\.pt: not the weights of FID's Inception-v3 "
                       r"\(RuntimeError: Error\(s\) in loading state_dict"):
        InceptionFeatures(path)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(ValueError, match="junk.safetensors: not a readable safetensors file"):
        InceptionFeatures(junk)


def test_eval_adds_fid_to_every_row(inception_file, tmp_path):
    from tests.eval.test_eval_cmd import write_photos
    from vtok.eval.compare import EvalConfig, evaluate

    images = write_photos(tmp_path / "imgs", 3, size=40)
    out = tmp_path / "report"
    results = evaluate(EvalConfig(
        tokenizers=["test-conv2d"], images=images, out=out, size=32, batch_size=2,
        codecs=["jpeg"], qualities={"jpeg": [5, 95]}, text=False, features=False,
        robustness=False, inception_weights=inception_file, progress=False))
    fids = {r["setting"]: r["fid_inception"] for r in results["rows"]}
    assert set(fids) == {"all tokens", "q5", "q95"}
    assert all(value is not None and value >= 0 for value in fids.values())
    assert fids["q95"] < fids["q5"]  # nearly lossless JPEG sits closer to the originals
    assert json.loads((out / "results.json").read_text())["rows"][1]["fid_inception"] == \
        pytest.approx(fids["q5"])
    report = (out / "report.html").read_text()
    assert "FID" in report and "rd_fid_inception.png" in report
    assert (out / "rd_fid_inception.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
