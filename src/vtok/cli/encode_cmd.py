"""Encode images and video clips into .vtok token files with a tokenizer.

Inputs are image files, video files (by suffix: vtok.data.video_datasets.VIDEO_SUFFIXES) or
folders (searched recursively for both). An OUT ending in .vtok receives every input in one
file (each under its file's stem as its name); any other OUT is a folder that receives
NAME.vtok per input, in the same subfolders as below an input folder.

A video is read as one clip of at most --max-frames frames (from --start, for --duration
seconds, resampled to --fps if given) and stored as one entry with its frame count and frame
rate; it needs a tokenizer that codes clips (`Tokenizer.codes_clips`, e.g. conv3d), which also
stores still images as one-frame entries. A video that breaks off (truncated or corrupt) is
not coded. Unreadable inputs (and videos given to an image tokenizer) are skipped and named;
the others are still written, and the exit code is then 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vtok.cli.options import add_cache_option

DEFAULT_MAX_FRAMES = 256
MAX_CLIP_PIXELS = 1 << 28  # pixels of all frames of one clip: what `vtok decode` decodes per file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=Path, metavar="IN",
                        help="image or video files, or folders (recursive)")
    parser.add_argument("-t", "--tokenizer", required=True,
                        help="shipped tokenizer name or tokenizer folder")
    parser.add_argument("-o", "--out", required=True, type=Path, help="output file or folder")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("-n", "--num-tokens", type=int, help="tokens per image (variable-length)")
    how.add_argument("--target-bpp", type=float, help="most bits per pixel per stored image")
    how.add_argument("--target-lpips", type=float, help="LPIPS-Alex each image should reach")
    parser.add_argument("--coding", choices=["raw", "entropy"], default=None,
                        help="raw: ceil(log2 K) bits per token; entropy: range coding with the "
                        "token prior shipped beside the tokenizer; default: the smaller of the "
                        "two for each file (raw when no prior ships)")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    video = parser.add_argument_group("video inputs (a tokenizer that codes clips)")
    video.add_argument("--max-frames", type=int, default=DEFAULT_MAX_FRAMES,
                       help=f"most frames read from each video (default {DEFAULT_MAX_FRAMES})")
    video.add_argument("--start", type=float, default=0.0, help="seconds into each video")
    video.add_argument("--duration", type=float, help="seconds read from each video")
    video.add_argument("--fps", type=float, help="resample each video to this frame rate")
    video.add_argument("--stick", type=float, default=None, metavar="SLACK",
                       help="a token keeps its code from the previous latent frame when that "
                       "code is within (1 + SLACK) of the nearest in squared distance: fewer "
                       "bits on still regions (VQ codebooks; default 0.5; 0: nearest codes)")
    add_cache_option(parser)  # the LPIPS weights of --target-lpips


def _smallest(entries: list, codebook_size: int, coders: list):
    """The .vtok file of `entries` ((tokens, has_alpha, name) triples) under the coder that
    gives the fewest bytes."""
    from vtok.codec import to_vtok

    files = [to_vtok([e[0] for e in entries], codebook_size, c, [e[1] for e in entries],
                     [e[2] for e in entries]) for c in coders]
    return min(files, key=lambda f: len(f.to_bytes()))


def is_video(path: Path) -> bool:
    from vtok.data.video_datasets import VIDEO_SUFFIXES

    return path.suffix.lower() in VIDEO_SUFFIXES


def _expand(inputs: list[Path]) -> list[tuple[Path, Path]]:
    """(image or video path, its path relative to the output folder) for every input; folders
    are searched recursively (ValueError for a folder with no images or videos)."""
    from vtok.data.images import find_images
    from vtok.data.video_datasets import find_videos

    found = []
    for path in inputs:
        if path.is_dir():
            media = sorted(find_images(path) + find_videos(path))
            if not media:
                raise ValueError(f"{path}: no images in this folder (nor videos)")
            found += [(p, p.relative_to(path)) for p in media]
        else:
            found.append((path, Path(path.name)))
    return found


def _outputs(args: argparse.Namespace, found: list[tuple[Path, Path]]) -> tuple[bool, list[Path]]:
    """(one shared file?, output path per input)."""
    if args.out.suffix == ".vtok" and not args.out.is_dir():
        return True, [args.out] * len(found)
    return False, [args.out / rel.with_suffix(".vtok") for _, rel in found]


def _check_request(args: argparse.Namespace, tok) -> None:
    """Token-count options this tokenizer cannot honour, refused before any work."""
    asked = [name for name in ("num_tokens", "target_bpp", "target_lpips")
             if getattr(args, name) is not None]
    if asked and not tok.variable_length:
        raise ValueError(f"a {tok.architecture} tokenizer has a fixed token count; "
                         f"--{asked[0].replace('_', '-')} needs a variable-length one")
    if args.num_tokens is not None and not 1 <= args.num_tokens <= tok.max_tokens:
        raise ValueError(f"--num-tokens must be in [1, {tok.max_tokens}], got {args.num_tokens}")
    for name in ("target_bpp", "target_lpips"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {value}")
    if args.max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.start < 0 or (args.duration is not None and not args.duration > 0) or (
            args.fps is not None and not args.fps > 0):
        raise ValueError("--start must be >= 0, --duration and --fps > 0")


def _read_video(path: Path, args: argparse.Namespace, tok, notes: list[str]):
    """The clip `[T, 3, H, W]` and its frame rate (num, den) of a video, or ValueError naming
    the file and what is wrong (an image tokenizer, unreadable, truncated, no frame rate).
    At most MAX_CLIP_PIXELS pixels are read (fewer frames than --max-frames at large sizes,
    noted), so the clip fits in memory and `vtok decode` decodes it."""
    import warnings
    from fractions import Fraction

    from vtok.data.video import VideoReadWarning, probe_video, read_clip
    from vtok.models.base import MAX_DECODE_PIXELS

    if not tok.codes_clips:
        raise ValueError(f"{path}: is a video; a {tok.architecture} tokenizer codes still "
                         f"images; use a video tokenizer (conv3d)")
    info = probe_video(path, max_pixels=MAX_DECODE_PIXELS)  # a huge size refused unread
    limit = max(1, MAX_CLIP_PIXELS // (info.width * info.height))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VideoReadWarning)  # clip.problem says it
        clip = read_clip(path, min(args.max_frames, limit), start=args.start,
                         duration=args.duration,
                         fps=None if args.fps is None else Fraction(args.fps),
                         max_pixels=MAX_DECODE_PIXELS)
    if clip.problem is not None:
        raise ValueError(f"{path}: not coded: {clip.problem}")
    if clip.frames.shape[0] == limit < args.max_frames:
        notes.append(f"{path}: only its first {limit} frames are coded ({info.width}x"
                     f"{info.height}: at most {MAX_CLIP_PIXELS} pixels per clip)")
    if clip.frames.shape[0] > 1:
        if clip.fps is None or not clip.fps > 0:
            raise ValueError(f"{path}: the video has no frame rate; give one with --fps")
        fps = Fraction(clip.fps).limit_denominator(1 << 20)
        if not 0 < fps.numerator < 1 << 32:
            raise ValueError(f"{path}: frame rate {float(clip.fps)} out of range")
        rate = (fps.numerator, fps.denominator)
    else:
        rate = (0, 1)
    return clip.frames, rate


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vtok.codec import write_vtok
    from vtok.codec.container import image_name
    from vtok.codec.select import tokens_for_bpp, tokens_for_count, tokens_for_lpips
    from vtok.codec.tokens_file import has_prior, make_coder
    from vtok.data.images import load_image
    from vtok.models import Tokenizer
    from vtok.models.conv3d import set_stick
    from vtok.models.presets import tokenizer_dir

    try:
        directory = tokenizer_dir(args.tokenizer)
        tok = Tokenizer.from_pretrained(directory)
        _check_request(args, tok)
        set_stick(tok, args.stick)
        coding = args.coding or ("entropy" if has_prior(directory) else "raw")
        coder = make_coder(coding, tok, directory)
        # without --coding, each file gets whichever coding is smaller for it (a short
        # sequence can cost more under the prior than packed raw)
        coders = [coder] if args.coding or coding == "raw" else [
            coder, make_coder("raw", tok, directory)]
        found = _expand(args.inputs)
        from vtok.codec.container import MAX_IMAGES

        if args.out.suffix == ".vtok" and not args.out.is_dir() and len(found) > MAX_IMAGES:
            raise ValueError(f"{len(found)} images cannot share one .vtok file (at most "
                             f"{MAX_IMAGES}); give a folder as -o")
    except ValueError as err:
        print(f"vtok encode: {err}", file=sys.stderr)
        return 2
    lpips = None
    if args.target_lpips is not None:
        from vtok.cache import MissingAssetError
        from vtok.losses import LPIPS

        try:
            lpips = LPIPS("alex", cache=args.cache)
        except MissingAssetError as err:  # names `vtok data prepare`
            print(f"vtok encode: {err}", file=sys.stderr)
            return 1
    shared, outputs = _outputs(args, found)
    if not shared and len(set(outputs)) < len(outputs):
        clash = sorted({str(p) for p in outputs if outputs.count(p) > 1})
        print(f"vtok encode: several inputs would write {', '.join(clash)}; encode them into "
              f"one .vtok file or separately", file=sys.stderr)
        return 2
    if not args.force:
        existing = sorted({str(p) for p in outputs if p.exists()})
        if existing:
            print(f"vtok encode: {', '.join(existing)} exists (use --force to overwrite)",
                  file=sys.stderr)
            return 1
    bad, done, kept, notes = [], [], [], []
    paths = [path for path, _ in found]
    bar = tqdm(paths, desc="encode", unit="file", disable=len(paths) < 2)
    for path, out in zip(bar, outputs):
        try:
            if is_video(path):
                frames, rate = _read_video(path, args, tok, notes)
                tokens = tok.encode(frames[None])
                tokens.fps = rate
                entry = (tokens, False, image_name(path.stem))
                if not shared:
                    out.parent.mkdir(parents=True, exist_ok=True)
                    write_vtok(out, _smallest([entry], tok.codebook_size, coders), force=True)
                    done.append(out)
                kept.append(entry)
                continue
            decoded = load_image(path)
            image = decoded.pixels
            if args.target_bpp is not None:
                tokens = tokens_for_bpp(tok, image, args.target_bpp, coder)
            elif lpips is not None:
                tokens = tokens_for_lpips(tok, image, args.target_lpips, lpips)
            else:
                tokens = tokens_for_count(tok, image, args.num_tokens)
            entry = (tokens, decoded.alpha, image_name(path.stem))
            if not shared:
                out.parent.mkdir(parents=True, exist_ok=True)
                write_vtok(out, _smallest([entry], tok.codebook_size, coders), force=True)
                done.append(out)
        except (ValueError, OSError) as err:  # unreadable, too large, unwritable: skip it
            bad.append(str(err) if str(path) in str(err) else f"{path}: {err}")
            continue
        if decoded.animated:
            notes.append(f"{path}: animated image; only its first frame is coded")
        kept.append(entry)
    if shared and kept:
        try:
            outputs[0].parent.mkdir(parents=True, exist_ok=True)
            write_vtok(outputs[0], _smallest(kept, tok.codebook_size, coders), force=True)
            done.append(outputs[0])
        except (ValueError, OSError) as err:
            print(f"vtok encode: cannot write {outputs[0]} ({err})", file=sys.stderr)
            return 1
    print(f"encoded {len(done) if not shared else len(kept)} of {len(paths)} inputs "
          f"into {len(done)} file(s)"
          + (f": {done[0]}" if len(done) == 1 else f" in {args.out}" if done else ""))
    for message in notes:
        print(f"note: {message}", file=sys.stderr)
    for message in bad:
        print(f"skipped {message}", file=sys.stderr)
    return 1 if bad else 0
