import json
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

av = pytest.importorskip("av")

from vtok.cli import main  # noqa: E402
from vtok.codec import RawCoder, from_vtok, read_vtok  # noqa: E402
from vtok.data.video import read_clip  # noqa: E402
from vtok.eval.metrics import to_uint8  # noqa: E402
from vtok.models import create_tokenizer, load  # noqa: E402

FRAMES, W, H = 9, 32, 24


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    for name in ("test-conv3d", "test-conv2d"):
        torch.manual_seed(0)
        create_tokenizer(name).save_pretrained(root / name)
    return root


def write_clip(path, n=FRAMES, rate=25):
    """A tiny lossless clip: a gradient that moves one pixel per frame."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=rate)
        stream.height, stream.width, stream.pix_fmt = H, W, "bgr0"
        x = np.arange(W)[None, :, None]
        y = np.arange(H)[:, None, None]
        for i in range(n):
            pixels = np.broadcast_to((x * 7 + y * 5 + i * 9) % 256, (H, W, 3)).astype(np.uint8)
            pixels = np.ascontiguousarray(pixels)
            pixels[..., 1] = 255 - pixels[..., 1]
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def no_temp_files(folder):
    return not [p for p in folder.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]


def test_clip_round_trip_to_video_and_png_frames(tokenizers, tmp_path, capsys):
    tok_dir = tokenizers / "test-conv3d"
    clip = write_clip(tmp_path / "clip.mkv")
    out = tmp_path / "clip.vtok"
    assert main(["encode", str(clip), "-t", str(tok_dir), "-o", str(out)]) == 0
    vfile = read_vtok(out)
    (entry,) = vfile.images
    assert (entry.frames, entry.fps, entry.image_size, entry.name) == (FRAMES, (25, 1), (H, W),
                                                                      "clip")
    tok = load(tok_dir)
    (tokens,) = from_vtok(vfile, RawCoder(tok.codebook_size), tok)
    frames = read_clip(clip, 256).frames
    assert torch.equal(tokens.indices, tok.encode(frames[None]).indices)
    expected = to_uint8(tok.decode(tokens)[0]).permute(0, 2, 3, 1).numpy()

    # a folder of PNG frames equal to tok.decode of the stored tokens
    frames_dir = tmp_path / "frames"
    assert main(["decode", str(out), "-o", str(frames_dir), "-t", str(tok_dir)]) == 0
    pngs = sorted((frames_dir / "clip").iterdir())
    assert [p.name for p in pngs] == [f"frame_{i:06d}.png" for i in range(FRAMES)]
    for png, want in zip(pngs, expected):
        got = np.asarray(Image.open(png).convert("RGB")).astype(int)
        assert np.abs(got - want.astype(int)).max() <= 1
    # no overwrite without --force; with it, the frames are replaced
    assert main(["decode", str(out), "-o", str(frames_dir), "-t", str(tok_dir)]) == 1
    assert main(["decode", str(out), "-o", str(frames_dir), "-t", str(tok_dir), "--force"]) == 0

    # lossless .mkv and lossy .mp4 (4:2:0 on the untrained decoder's noisy colours: a loose
    # bound): frame count, size and rate kept
    for name, tol in (("dec.mkv", 0), ("dec.mp4", 25)):
        assert main(["decode", str(out), "-o", str(tmp_path / name), "-t", str(tok_dir)]) == 0
        back = read_clip(tmp_path / name, 256)
        assert back.frames.shape == (FRAMES, 3, H, W) and back.fps == Fraction(25)
        got = to_uint8(back.frames).permute(0, 2, 3, 1).numpy().astype(int)
        assert np.abs(got - expected.astype(int)).mean() <= tol
    # an image output for a clip is refused
    assert main(["decode", str(out), "-o", str(tmp_path / "x.png"), "-t", str(tok_dir)]) == 1
    assert "clip of 9 frames" in capsys.readouterr().err
    assert no_temp_files(tmp_path)

    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{W}x{H} px, 9 frames at 25 fps" in text and "bpp per frame" in text
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)["images"][0]
    assert info["frames"] == FRAMES and info["fps"] == [25, 1]
    assert info["payload_bpp"] == pytest.approx(info["payload_bytes"] * 8 / (W * H * FRAMES))


def test_odd_sized_clip_to_mp4_is_padded_and_mkv_is_exact(tokenizers, tmp_path):
    tok_dir = tokenizers / "test-conv3d"
    clip = tmp_path / "odd.mkv"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("ffv1", rate=Fraction(30000, 1001))
        stream.height, stream.width, stream.pix_fmt = 15, 17, "bgr0"
        for i in range(3):
            pixels = np.full((15, 17, 3), 40 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out = tmp_path / "odd.vtok"
    assert main(["encode", str(clip), "-t", str(tok_dir), "-o", str(out)]) == 0
    assert read_vtok(out).images[0].fps == (30000, 1001)
    for name, size in (("o.mkv", (15, 17)), ("o.mp4", (16, 18))):
        assert main(["decode", str(out), "-o", str(tmp_path / name), "-t", str(tok_dir)]) == 0
        back = read_clip(tmp_path / name, 256)
        assert back.frames.shape == (3, 3, *size) and back.fps == Fraction(30000, 1001)


def test_bad_videos_are_named_and_the_good_ones_still_coded(tokenizers, tmp_path, capsys):
    tok_dir = tokenizers / "test-conv3d"
    good = write_clip(tmp_path / "good.mkv")
    (tmp_path / "garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"junk" * 50)
    (tmp_path / "empty.mp4").write_bytes(b"")
    data = good.read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) * 2 // 3])
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "still.png")
    out = tmp_path / "out"
    inputs = [str(tmp_path / n) for n in ("garbage.mp4", "good.mkv", "empty.mp4", "cut.mkv",
                                               "still.png")]
    assert main(["encode", *inputs, "-t", str(tok_dir), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "garbage.mp4" in err and "empty.mp4" in err and "good.mkv" not in err
    assert "skipped " + str(tmp_path / "cut.mkv") in err
    assert sorted(p.name for p in out.iterdir()) == ["good.vtok", "still.vtok"]
    assert read_vtok(out / "good.vtok").images[0].frames == FRAMES
    still = read_vtok(out / "still.vtok").images[0]
    assert (still.frames, still.fps) == (1, (0, 1))
    assert no_temp_files(tmp_path)
    # a still entry decodes to a PNG with a video tokenizer, and is refused as a video
    assert main(["decode", str(out / "still.vtok"), "-o", str(tmp_path / "s.png"),
                 "-t", str(tok_dir)]) == 0
    assert Image.open(tmp_path / "s.png").size == (W, H)
    assert main(["decode", str(out / "still.vtok"), "-o", str(tmp_path / "s.mp4"),
                 "-t", str(tok_dir)]) == 1
    # one shared file: the good ones in it
    shared = tmp_path / "all.vtok"
    assert main(["encode", *inputs, "-t", str(tok_dir), "-o", str(shared)]) == 1
    assert [im.frames for im in read_vtok(shared).images] == [FRAMES, 1]


def test_a_video_with_an_image_tokenizer_is_refused_naming_it(tokenizers, tmp_path, capsys):
    write_clip(tmp_path / "clip.mkv")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main(["encode", str(tmp_path), "-t", str(tokenizers / "test-conv2d"),
                 "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "clip.mkv: is a video; a conv2d tokenizer codes still images" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.vtok"]


def test_large_clips_are_capped_and_huge_frames_refused(tokenizers, tmp_path, capsys,
                                                        monkeypatch):
    from vtok.cli import encode_cmd
    from vtok.models import base

    tok_dir = str(tokenizers / "test-conv3d")
    clip = str(write_clip(tmp_path / "clip.mkv"))
    monkeypatch.setattr(encode_cmd, "MAX_CLIP_PIXELS", W * H * 4)
    assert main(["encode", clip, "-t", tok_dir, "-o", str(tmp_path / "a.vtok")]) == 0
    assert read_vtok(tmp_path / "a.vtok").images[0].frames == 4
    assert "only its first 4 frames are coded" in capsys.readouterr().err
    monkeypatch.setattr(base, "MAX_DECODE_PIXELS", W * H - 1)
    assert main(["encode", clip, "-t", tok_dir, "-o", str(tmp_path / "b.vtok")]) == 1
    assert "clip.mkv" in capsys.readouterr().err and not (tmp_path / "b.vtok").exists()


def test_fps_and_start_are_passed_to_the_reader(tokenizers, tmp_path):
    clip = str(write_clip(tmp_path / "clip.mkv"))
    out = tmp_path / "c.vtok"
    assert main(["encode", clip, "-t", str(tokenizers / "test-conv3d"), "-o", str(out),
                 "--fps", "10", "--start", "0.04"]) == 0
    (entry,) = read_vtok(out).images
    assert entry.fps == (10, 1) and entry.frames == len(read_clip(clip, 256, start=0.04,
                                                                  fps=10).frames)


def test_encode_sticks_by_default_for_a_vq_video_tokenizer_and_stick_0_turns_it_off(tmp_path):
    torch.manual_seed(0)
    tok = create_tokenizer("test-conv3d", quantizer="vq",
                           quantizer_options={"codebook_size": 64}).eval()
    tok.save_pretrained(tmp_path / "vq")
    clip = write_clip(tmp_path / "clip.mkv")
    frames = read_clip(clip, 256).frames[None]
    stored = {}
    for name, extra in (("default", []), ("off", ["--stick", "0"]), ("wide", ["--stick", "3"])):
        out = tmp_path / f"{name}.vtok"
        assert main(["encode", str(clip), "-t", str(tmp_path / "vq"), "-o", str(out),
                     "--coding", "raw", *extra]) == 0
        (stored[name],) = from_vtok(read_vtok(out), RawCoder(tok.codebook_size), tok)
    with torch.no_grad():
        for name, stick in (("default", 0.5), ("off", 0.0), ("wide", 3.0)):
            tok.stick = stick
            assert torch.equal(stored[name].indices, tok.encode(frames).indices), name
    changes = {k: int((t.indices[:, 1:] != t.indices[:, :-1]).sum()) for k, t in stored.items()}
    assert changes["wide"] <= changes["default"] < changes["off"], changes
