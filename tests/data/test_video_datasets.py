"""Random clips from tiny videos written here with PyAV (ffv1 is lossless, so crops compare
exactly)."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("av")

from tests.data.test_video import write_clip  # noqa: E402
from vtok.data.datasets import ImageItem, image_items  # noqa: E402
from vtok.data.video import VideoReadError  # noqa: E402
from vtok.data.video_datasets import (  # noqa: E402
    ClipBox,
    RandomClips,
    VideoItem,
    clip_items,
    video_items,
)


def noise(n, w=40, h=30, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def pixels(frame):
    return torch.from_numpy(frame).permute(2, 0, 1).float() / 255


@pytest.fixture
def folder(tmp_path):
    write_clip(tmp_path / "a.mkv", noise(20))
    (tmp_path / "sub").mkdir()
    write_clip(tmp_path / "sub" / "b.mkv", noise(16, w=36, h=28, seed=1))
    return tmp_path


def test_clips_have_the_asked_shape_and_are_deterministic(folder):
    data = RandomClips(video_items(folder), size=16, frames=4, stride=2, seed=3, min_scale=0.5)
    again = RandomClips(video_items(folder), size=16, frames=4, stride=2, seed=3, min_scale=0.5)
    assert len(data) == 2
    clips = [data[i] for i in range(6)]
    assert all(c.shape == (4, 3, 16, 16) and c.min() >= 0 and c.max() <= 1 for c in clips)
    assert all(torch.equal(c, again[i]) for i, c in enumerate(clips))
    assert not torch.equal(clips[0], clips[2])  # the same video, another clip
    other = RandomClips(video_items(folder), size=16, frames=4, stride=2, seed=4)
    assert not all(torch.equal(c, other[i]) for i, c in enumerate(clips))
    assert torch.equal(data.batch(2, 3), torch.stack(clips[2:5]))


def test_every_frame_of_a_clip_is_cut_with_the_same_box(tmp_path):
    frames = noise(20)
    path = write_clip(tmp_path / "a.mkv", frames)
    data = RandomClips(video_items(path), size=12, frames=3, stride=3, seed=1)
    flipped = 0
    for i in range(8):
        box = data.box(i, 0, 30, 40, 20)
        clip = data[i]
        t = slice(box.top, box.top + 12), slice(box.left, box.left + 12)
        for k in range(3):
            want = pixels(frames[box.start + 3 * k])[:, t[0], t[1]]
            assert torch.equal(clip[k], want.flip(-1) if box.flip else want)
        flipped += box.flip
    assert 0 < flipped < 8  # some clips flipped as a whole, some not


def test_only_the_frames_of_the_clip_are_decoded(tmp_path, decoded_pts):
    path = write_clip(tmp_path / "long.mkv", noise(48, w=16, h=16))
    data = RandomClips(video_items(path), size=8, frames=2, stride=2, seed=0)
    data._video(0)  # the header and the last second, read once per video
    decoded = decoded_pts  # cleared before each clip below
    for i in range(4):
        decoded.clear()
        data[i]
        box = data.box(i, 0, 16, 16, 48)
        # the clip's 3 frames, from the seek point at or before its start (Matroska cues: one
        # every 12 frames here), never the whole 48
        assert decoded[-1] == (box.start + 2) * 100
        assert box.start * 100 - 1200 <= decoded[0] <= box.start * 100 and len(decoded) <= 15


def test_a_clip_past_the_last_frame_starts_at_the_first_instead(tmp_path):
    frames = noise(10)
    data = RandomClips(video_items(write_clip(tmp_path / "a.mkv", frames)), size=8, frames=4,
                       flip=False)
    data.box = lambda i, index, h, w, count: ClipBox(index, 8, 0, 0, 8, False)
    clip = data[0]
    assert torch.equal(clip, torch.stack([pixels(f)[:, :8, :8] for f in frames[:4]]))


def test_truncated_garbage_and_short_videos_are_skipped_and_counted(tmp_path):
    good = write_clip(tmp_path / "good.mkv", noise(12))
    whole = write_clip(tmp_path / "whole.mkv", noise(12, seed=2)).read_bytes()
    (tmp_path / "cut.mkv").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "whole.mkv").unlink()
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(5).bytes(3000))
    write_clip(tmp_path / "short.mkv", noise(3))
    data = RandomClips(video_items(tmp_path), size=8, frames=4)
    with pytest.warns(UserWarning) as caught:
        clips = [data[i] for i in range(8)]
    assert all(c.shape == (4, 3, 8, 8) for c in clips)
    assert sorted(data.skipped) == sorted(str(tmp_path / n) for n in
                                          ("cut.mkv", "garbage.mp4", "short.mkv"))
    assert str(good) not in data.skipped
    assert "ends at" in data.skipped[str(tmp_path / "cut.mkv")]
    assert "not a readable video" in data.skipped[str(tmp_path / "garbage.mp4")]
    assert "too short: 3 frames" in data.skipped[str(tmp_path / "short.mkv")]
    messages = " ".join(str(w.message) for w in caught)
    assert all(name in messages for name in ("cut.mkv", "garbage.mp4", "short.mkv"))
    # a truncated file is skipped whichever item meets it first: the same items in any order
    backwards = RandomClips(video_items(tmp_path), size=8, frames=4)
    with pytest.warns(UserWarning):
        assert all(torch.equal(backwards[i], clips[i]) for i in reversed(range(8)))


def test_nothing_readable_is_an_error(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"x" * 100)
    data = RandomClips(video_items(tmp_path), size=8, frames=2)
    with pytest.warns(UserWarning), pytest.raises(VideoReadError, match="none of the 1"):
        data[0]


def test_images_are_one_frame_clips(folder):
    Image.fromarray(noise(1, w=24, h=20)[0]).save(folder / "still.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    items = clip_items(folder)
    assert [type(i) for i in items] == [VideoItem, VideoItem, ImageItem, ImageItem]
    data = RandomClips(items, size=16, frames=1, seed=2)
    with pytest.warns(UserWarning, match="broken.jpg"):
        clips = [data[i] for i in range(8)]
    assert all(c.shape == (1, 3, 16, 16) for c in clips)
    assert list(data.skipped) == [str(folder / "broken.jpg")]
    with pytest.warns(UserWarning, match="2 images left out"):
        moving = RandomClips(items, size=16, frames=2)
    assert len(moving) == 2 and moving.left_out == 2 and moving[0].shape == (2, 3, 16, 16)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="at least one video"):
        RandomClips(image_items(folder / "still.png"), size=16, frames=2)


def test_small_videos_are_upscaled_to_the_crop_size(tmp_path):
    data = RandomClips(video_items(write_clip(tmp_path / "s.mkv", noise(4, w=12, h=10))),
                       size=16, frames=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert data[0].shape == (2, 3, 16, 16)


def test_items_come_from_folders_files_and_shards(folder):
    (folder / "notes.txt").write_text("x")
    assert [i.path.name for i in video_items(folder)] == ["a.mkv", "b.mkv"]
    assert [i.name for i in video_items([folder / "sub" / "b.mkv"])] == [
        str(folder / "sub" / "b.mkv")]
    with pytest.raises(VideoReadError, match="notes.txt: not a folder or a video"):
        video_items(folder / "notes.txt")
    with pytest.raises(VideoReadError, match="notes.txt: not a folder, a video, an image"):
        clip_items(folder / "notes.txt")
    (folder / "empty").mkdir()
    with pytest.raises(VideoReadError, match="no videos found"):
        video_items(folder / "empty")
    with pytest.raises(ValueError, match="frames and stride must be >= 1"):
        RandomClips(video_items(folder), size=8, frames=0)
