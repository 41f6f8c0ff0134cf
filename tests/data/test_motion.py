"""Clips made from photos by a random camera move (vtok.data.motion)."""

import numpy as np
import pytest
import torch
from PIL import Image

from vtok.data.datasets import image_items
from vtok.data.motion import PhotoMotionClips


@pytest.fixture()
def ramp_dir(tmp_path):
    """One 120x160 photo whose red channel is x / W and green channel y / H."""
    yy, xx = np.mgrid[0:120, 0:160]
    img = np.stack([(xx + 0.5) / 160, (yy + 0.5) / 120, np.full(xx.shape, 0.5)], -1)
    Image.fromarray((img * 255).round().astype(np.uint8)).save(tmp_path / "ramp.png")
    return tmp_path


def test_clips_are_fixed_by_seed_and_index(ramp_dir):
    clips = PhotoMotionClips(image_items(ramp_dir), size=32, frames=5, seed=3)
    again = PhotoMotionClips(image_items(ramp_dir), size=32, frames=5, seed=3)
    a = clips[7]
    assert a.shape == (5, 3, 32, 32) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, again[7])
    assert not torch.equal(a, clips[8])


def test_the_camera_moves_in_a_straight_line_inside_the_photo(ramp_dir):
    clips = PhotoMotionClips(image_items(ramp_dir), size=32, frames=9, max_speed=0.2,
                             max_zoom=1.0)
    clips.flip = False
    moved = 0
    for i in range(8):
        clip = clips[i]
        # the ramp's mean over a crop is its centre: (x / W, y / H)
        centres = clip[:, :2].mean(dim=(2, 3)) * torch.tensor([160, 120])
        steps = centres[1:] - centres[:-1]
        assert torch.allclose(steps, steps.mean(0), atol=0.3), centres  # constant velocity
        assert steps.norm(dim=1).max() <= 0.2 * 32 + 0.3  # crops of 32 px: at most 6.4 a frame
        moved += bool(steps.norm(dim=1).mean() > 0.5)
        assert (centres >= 0).all() and (centres <= torch.tensor([160, 120])).all()
    assert moved >= 4


def test_without_motion_every_frame_is_the_first(ramp_dir):
    clips = PhotoMotionClips(image_items(ramp_dir), size=32, frames=5, max_speed=0.0,
                             max_zoom=1.0)
    clip = clips[2]
    assert torch.allclose(clip, clip[:1].expand_as(clip))


def test_bad_settings_are_refused(ramp_dir):
    with pytest.raises(ValueError, match="max_zoom >= 1, got 0.04 and 0.5"):
        PhotoMotionClips(image_items(ramp_dir), size=32, frames=5, max_zoom=0.5)
    with pytest.raises(ValueError, match="frames must be >= 1"):
        PhotoMotionClips(image_items(ramp_dir), size=32, frames=0)


def test_clips_are_the_same_in_every_process(ramp_dir):
    """Seeds mix only integers: Python salts str hashes per process (PYTHONHASHSEED)."""
    import os
    import subprocess
    import sys

    code = ("import sys; from vtok.data.datasets import image_items; "
            "from vtok.data.motion import PhotoMotionClips; "
            "c = PhotoMotionClips(image_items(sys.argv[1]), size=16, frames=3, seed=5); "
            "print(repr(float(c[4].sum())))")
    sums = {subprocess.run([sys.executable, "-c", code, str(ramp_dir)], check=True,
                           capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": salt}).stdout
            for salt in ("1", "2")}
    assert len(sums) == 1, sums
