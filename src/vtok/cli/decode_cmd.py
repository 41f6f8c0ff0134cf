"""Decode a .vtok file back into images and video clips.

The tokenizer is found among the shipped ones by the id stored in the file, or given with -t
(refused if its id differs). An OUT ending in an image suffix (.png, .jpg, .webp, ...) is the
image file for a one-image .vtok; any other OUT is a folder that receives IN.png for one
image, or for several each image's stored name (the stem of the file it was encoded from) as
NAME.png; an image without a name, or whose name another image already took, is IN-i.png.

A clip (an entry of several frames, from a video tokenizer) is written, at the frame rate it
stores, either as a video when OUT ends in .mp4 or .mkv (a one-entry file), or, in an OUT
folder, as a folder of PNG frames NAME/frame_000000.png, frame_000001.png, ... (IN/... for a
one-entry file). .mp4 is H.264 (libx264, yuv420p, CRF 18), lossy and widely playable; an odd
width or height is padded by one repeated edge column or row, since 4:2:0 needs even sides.
.mkv is FFV1 (lossless 8-bit RGB) at the exact size. Frames and videos are written under a
temporary name and renamed into place, so nothing half-written is left behind.

Every image is written (atomically) as soon as it is decoded, so memory holds one decoded
image at a time. Before anything is decoded, the file is refused if it holds more than
MAX_IMAGES images (the container's limit), more than MAX_TOTAL_PIXELS pixels in all, or an
image the tokenizer could not have made (each image at most `MAX_DECODE_PIXELS` of
models/base.py), and without --force if any output exists. A failure in image i leaves
images 0..i-1 written and exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_OUTPUTS = {".mp4", ".mkv"}
MAX_TOTAL_PIXELS = 1 << 28  # pixels decoded from one file, all images together (16 x 4096^2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, metavar="IN.vtok")
    parser.add_argument("-o", "--out", required=True, type=Path,
                        help="image file (one image), .mp4 or .mkv video (one clip), or a "
                        "folder: NAME.png per image, NAME/frame_000000.png... per clip")
    parser.add_argument("-t", "--tokenizer", help="tokenizer name or folder (default: the "
                        "shipped tokenizer whose id the file names)")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")


def _tokenizer(name: str | None, tokenizer_id: str):
    """(tokenizer, its folder)."""
    from vtok.models import Tokenizer
    from vtok.models.presets import shipped_with_id, tokenizer_dir

    if name is not None:
        directory = tokenizer_dir(name)
        return Tokenizer.from_pretrained(directory), directory
    found = shipped_with_id(tokenizer_id)
    if found is None:
        raise ValueError(f"no shipped tokenizer has id {tokenizer_id}; name it with -t")
    return found[1], tokenizer_dir(found[0])


def _check_file(vfile, tok) -> None:
    """Refuse, before any decoding, what this command will not decode (ValueError)."""
    total = sum(image.image_size[0] * image.image_size[1] * image.frames
                for image in vfile.images)
    if total > MAX_TOTAL_PIXELS:
        raise ValueError(f"declares {total} pixels in all; vtok decode decodes at most "
                         f"{MAX_TOTAL_PIXELS} per file")
    from vtok.codec.tokens_file import check_file_tokens

    check_file_tokens(vfile, tok)


def _outputs(args: argparse.Namespace, names: list[str],
             frames: list[int] | None = None) -> list[Path]:
    """Output per entry: an image file, a video file, or a folder of PNG frames (a clip's
    path without suffix). frames: per entry (default: all still images)."""
    frames = frames or [1] * len(names)
    suffix = args.out.suffix.lower()
    if suffix in IMAGE_SUFFIXES | VIDEO_OUTPUTS:
        if len(names) > 1:
            raise ValueError(f"holds {len(names)} images; give a folder as -o")
        if suffix in VIDEO_OUTPUTS and frames[0] == 1:
            raise ValueError("holds a still image, not a clip; give an image file or folder "
                             "as -o")
        if suffix in IMAGE_SUFFIXES and frames[0] > 1:
            raise ValueError(f"holds a clip of {frames[0]} frames; give a .mp4 or .mkv file "
                             f"or a folder (of PNG frames) as -o")
        return [args.out]
    if len(names) == 1:
        return [args.out / (args.input.stem if frames[0] > 1 else f"{args.input.stem}.png")]
    taken: set[str] = set()  # case-folded: A.png and a.png are one file on macOS and Windows
    outputs = []
    for i, name in enumerate(names):
        stem = name if name else f"{args.input.stem}-{i}"
        n = i
        while stem.casefold() in taken:
            stem, n = f"{args.input.stem}-{n}", n + len(names)
        taken.add(stem.casefold())
        out = args.out / f"{stem}.png"
        if out.resolve().parent != args.out.resolve():  # names are checked; this is a backstop
            raise ValueError(f"image {i}: its name {name!r} leaves the output folder")
        outputs.append(out.with_suffix("") if frames[i] > 1 else out)
    return outputs


def write_video(path: Path, frames, fps: tuple[int, int]) -> None:
    """uint8 frames `[T, H, W, 3]` (numpy) into `path`: .mp4 H.264 yuv420p (odd sides padded
    by a repeated edge), .mkv FFV1 RGB. Not atomic: see `atomic_write`."""
    from fractions import Fraction

    import av
    import numpy as np

    rate = Fraction(*fps)
    mp4 = path.suffix.lower() == ".mp4"
    if mp4:
        h, w = frames.shape[1:3]
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with av.open(str(path), "w", format="mp4" if mp4 else "matroska") as container:
        stream = container.add_stream("libx264" if mp4 else "ffv1", rate=rate)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p" if mp4 else "bgr0"
        if mp4:
            stream.options = {"crf": "18"}
        stream.codec_context.time_base = 1 / rate
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_frames(folder: Path, frames, force: bool) -> None:
    """uint8 frames `[T, H, W, 3]` as folder/frame_000000.png...: written into a temporary
    folder beside it, then renamed into place (an existing folder is replaced with `force`
    only if it holds nothing but frame_*.png files)."""
    import re
    import shutil

    from PIL import Image

    from vtok.files import temp_name

    if folder.exists():
        if not force:
            raise FileExistsError(f"{folder} exists (use --force to overwrite)")
        if not folder.is_dir() or any(not re.fullmatch(r"frame_\d{6}\.png", p.name)
                                      for p in folder.iterdir()):
            raise FileExistsError(f"{folder} exists and holds more than PNG frames; not "
                                  f"replaced")
    tmp = temp_name(folder)
    try:
        tmp.mkdir()
        for i, pixels in enumerate(frames):
            Image.fromarray(pixels).save(tmp / f"frame_{i:06d}.png")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vtok.codec import VtokFormatError, from_vtok, read_vtok
    from vtok.codec.tokens_file import make_coder
    from vtok.eval.codecs import to_pil
    from vtok.eval.metrics import to_uint8
    from vtok.files import atomic_write

    try:
        vfile = read_vtok(args.input)
    except VtokFormatError as err:  # names the file already
        print(f"vtok decode: {err}", file=sys.stderr)
        return 1
    try:
        tok, directory = _tokenizer(args.tokenizer, vfile.tokenizer_id)
        if tok.tokenizer_id != vfile.tokenizer_id:  # before looking for its prior
            raise ValueError(f"these tokens were made by tokenizer {vfile.tokenizer_id}; "
                             f"the tokenizer given is {tok.tokenizer_id}")
        _check_file(vfile, tok)
        outputs = _outputs(args, [image.name for image in vfile.images],
                           [image.frames for image in vfile.images])
        coder = make_coder(vfile.coding, tok, directory)
    except ValueError as err:
        print(f"vtok decode: {args.input}: {err}", file=sys.stderr)
        return 1
    existing = [str(p) for p in outputs if p.exists()]
    if existing and not args.force:
        print(f"vtok decode: {', '.join(existing)} exists (use --force to overwrite)",
              file=sys.stderr)
        return 1
    bar = tqdm(total=len(outputs), desc="decode", unit="entry",
               disable=len(outputs) < 2 or not sys.stderr.isatty())
    for i, (image, out) in enumerate(zip(vfile.images, outputs)):
        one = dataclasses.replace(vfile, images=[image])
        try:
            (tokens,) = from_vtok(one, coder, tok)
            pixels = tok.decode(tokens)[0]
            if image.frames > 1:
                pil = to_uint8(pixels).permute(0, 2, 3, 1).contiguous().numpy()
            else:
                pil = to_pil(pixels)
            del pixels
        except (ValueError, RuntimeError) as err:
            print(f"vtok decode: {args.input}: image {i}: {err}", file=sys.stderr)
            return 1
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            if image.frames == 1:
                atomic_write(out, lambda tmp, im=pil: im.save(tmp))
            elif out.suffix.lower() in VIDEO_OUTPUTS:
                atomic_write(out, lambda tmp, v=pil, fps=image.fps: write_video(tmp, v, fps))
            else:
                write_frames(out, pil, args.force)
        except (OSError, ValueError, RuntimeError) as err:  # PyAV errors are OSError/ValueError
            print(f"vtok decode: cannot write {out} ({err})", file=sys.stderr)
            return 1
        del pil
        bar.update()
    bar.close()
    print(f"decoded {len(outputs)} image(s) from {args.input}"
          + (f" to {outputs[0]}" if len(outputs) == 1 else f" into {args.out}"))
    return 0
