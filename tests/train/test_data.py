"""What the loop trains and validates on: clip and one-frame steps, the validation set."""

import warnings

import pytest
import torch

from vtok import create_tokenizer
from vtok.data.datasets import center_crop
from vtok.train import TrainConfig
from vtok.train.data import TrainingClips, has_validation, validate, validation_set

av = pytest.importorskip("av")


def _config(**changes):
    return TrainConfig(**{"preset": "test-conv3d", "crop_size": 32, "clip_frames": 5,
                          **changes})


def _frames(path):
    with av.open(str(path)) as container:
        return [torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1).float() / 255
                for f in container.decode(video=0)]


def test_every_image_every_th_step_takes_one_frame_clips(clip_dir):
    from vtok.data.video_datasets import clip_items

    data = TrainingClips(clip_items(clip_dir), _config(image_every=3), per_step=2)
    frames = [data[n].shape[0] for n in range(12)]  # steps 0..5, two samples each
    assert frames == [5, 5, 5, 5, 1, 1, 5, 5, 5, 5, 1, 1]
    assert data[4].shape == (1, 3, 32, 32) and data.skipped == {}
    never = TrainingClips(clip_items(clip_dir), _config(), per_step=2)
    assert [never[n].shape[0] for n in range(6)] == [5] * 6
    assert torch.equal(never[0], data[0])  # the same clip stream


def test_the_validation_set_is_fixed_center_crops(clip_dir, photo_dir):
    clips = validation_set(_config(val_data=str(clip_dir), frame_stride=2), clips=True)
    assert len(clips) == 3 and all(c.shape == (5, 3, 32, 32) for c in clips)
    first = _frames(clip_dir / "0.mkv")
    assert torch.equal(clips[0], torch.stack([center_crop(first[i], 32) for i in range(0, 10, 2)]))
    with pytest.warns(UserWarning, match="skipping validation file: .*too short: 12 frames"), \
            pytest.raises(ValueError, match="no readable validation video or image in"):
        validation_set(_config(val_data=str(clip_dir), clip_frames=13), clips=True)
    with pytest.warns(UserWarning, match="skipping validation file: .*broken.jpg"):
        images = validation_set(_config(preset="test-conv2d", val_data=str(photo_dir)),
                                clips=False)
    assert len(images) == 4 and all(i.shape == (3, 32, 32) for i in images)
    # none unless asked for, but the default clips' val split for clips on the default clips
    assert not has_validation(_config(preset="test-conv2d"), clips=False)
    assert not has_validation(_config(data=str(clip_dir)), clips=True)
    assert has_validation(_config(), clips=True)
    assert validation_set(_config(data=str(clip_dir)), clips=True) == []


def test_validation_scores_in_eval_mode_and_changes_nothing(clip_dir):
    torch.manual_seed(0)
    model = create_tokenizer("test-conv3d", quantizer="vq",
                             quantizer_options={"codebook_size": 16}).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        items = validation_set(_config(val_data=str(clip_dir)), clips=True)
    scores = validate(model, items)
    assert 0 < scores["val_l1"] < 1 and scores["val_psnr"] > 0
    assert scores["val_lpips"] != scores["val_lpips"]  # NaN: no LPIPS given
    assert model.training  # back in training mode, no codebook update or k-means init
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
