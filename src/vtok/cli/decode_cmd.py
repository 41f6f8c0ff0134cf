"""Decode a .vtok file back into images.

The tokenizer is found among the shipped ones by the id stored in the file, or given with -t
(refused if its id differs). An OUT ending in an image suffix (.png, .jpg, .webp, ...) is the
image file for a one-image .vtok; any other OUT is a folder that receives NAME.png, or
NAME-0.png, NAME-1.png, ... for a file holding several images.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


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


def run(args: argparse.Namespace) -> int:
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
        tokens = from_vtok(vfile, make_coder(vfile.coding, tok, directory), tok)
        images = [to_pil(tok.decode(t)[0]) for t in tokens]
    except (ValueError, RuntimeError) as err:
        print(f"vtok decode: {args.input}: {err}", file=sys.stderr)
        return 1
    if args.out.suffix.lower() in IMAGE_SUFFIXES:
        if len(tokens) > 1:
            print(f"vtok decode: {args.input} holds {len(tokens)} images; give a folder as -o",
                  file=sys.stderr)
            return 1
        outputs = [args.out]
    elif len(tokens) == 1:
        outputs = [args.out / f"{args.input.stem}.png"]
    else:
        outputs = [args.out / f"{args.input.stem}-{i}.png" for i in range(len(tokens))]
    existing = [str(p) for p in outputs if p.exists()]
    if existing and not args.force:
        print(f"vtok decode: {', '.join(existing)} exists (use --force to overwrite)",
              file=sys.stderr)
        return 1
    for image, out in zip(images, outputs):
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(out, lambda tmp, im=image: im.save(tmp))
        except (OSError, ValueError) as err:
            print(f"vtok decode: cannot write {out} ({err})", file=sys.stderr)
            return 1
    print(f"decoded {len(tokens)} image(s) from {args.input}"
          + (f" to {outputs[0]}" if len(outputs) == 1 else f" into {args.out}"))
    return 0
