"""Decode a .vtok file back into images.

The tokenizer is found among the shipped ones by the id stored in the file, or given with -t
(refused if its id differs). An OUT ending in an image suffix (.png, .jpg, .webp, ...) is the
image file for a one-image .vtok; any other OUT is a folder that receives IN.png for one
image, or for several each image's stored name (the stem of the file it was encoded from) as
NAME.png; an image without a name, or whose name another image already took, is IN-i.png.

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
MAX_TOTAL_PIXELS = 1 << 28  # pixels decoded from one file, all images together (16 x 4096^2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, metavar="IN.vtok")
    parser.add_argument("-o", "--out", required=True, type=Path, help="image file or folder")
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
    total = sum(image.image_size[0] * image.image_size[1] for image in vfile.images)
    if total > MAX_TOTAL_PIXELS:
        raise ValueError(f"declares {total} pixels in all; vtok decode decodes at most "
                         f"{MAX_TOTAL_PIXELS} per file")
    from vtok.codec.tokens_file import check_file_tokens

    check_file_tokens(vfile, tok)


def _outputs(args: argparse.Namespace, names: list[str]) -> list[Path]:
    if args.out.suffix.lower() in IMAGE_SUFFIXES:
        if len(names) > 1:
            raise ValueError(f"holds {len(names)} images; give a folder as -o")
        return [args.out]
    if len(names) == 1:
        return [args.out / f"{args.input.stem}.png"]
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
        outputs.append(out)
    return outputs


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vtok.codec import VtokFormatError, from_vtok, read_vtok
    from vtok.codec.tokens_file import make_coder
    from vtok.eval.codecs import to_pil
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
        outputs = _outputs(args, [image.name for image in vfile.images])
        coder = make_coder(vfile.coding, tok, directory)
    except ValueError as err:
        print(f"vtok decode: {args.input}: {err}", file=sys.stderr)
        return 1
    existing = [str(p) for p in outputs if p.exists()]
    if existing and not args.force:
        print(f"vtok decode: {', '.join(existing)} exists (use --force to overwrite)",
              file=sys.stderr)
        return 1
    bar = tqdm(total=len(outputs), desc="decode", unit="img",
               disable=len(outputs) < 2 or not sys.stderr.isatty())
    for i, (image, out) in enumerate(zip(vfile.images, outputs)):
        one = dataclasses.replace(vfile, images=[image])
        try:
            (tokens,) = from_vtok(one, coder, tok)
            pil = to_pil(tok.decode(tokens)[0])
        except (ValueError, RuntimeError) as err:
            print(f"vtok decode: {args.input}: image {i}: {err}", file=sys.stderr)
            return 1
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(out, lambda tmp, im=pil: im.save(tmp))
        except (OSError, ValueError) as err:
            print(f"vtok decode: cannot write {out} ({err})", file=sys.stderr)
            return 1
        del pil
        bar.update()
    bar.close()
    print(f"decoded {len(outputs)} image(s) from {args.input}"
          + (f" to {outputs[0]}" if len(outputs) == 1 else f" into {args.out}"))
    return 0
