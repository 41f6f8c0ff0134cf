"""Describe a .vtok file: format, coding, tokenizer, and per image its size, tokens and bpp.

For a clip, also its frame count and frame rate; its bpp are bits per pixel per frame (the
payload over width x height x frames), as is the overall bpp of a file holding clips.

The shipped tokenizer is named from the ids stored in the shipped folders (no model is loaded).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, metavar="IN.vtok")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def describe(path: Path) -> dict[str, Any]:
    from vtok.codec.container import read_vtok
    from vtok.models.shipped import shipped_name

    vfile = read_vtok(path)
    size = path.stat().st_size
    pixels = sum(im.image_size[0] * im.image_size[1] * im.frames for im in vfile.images)
    return {
        "file": str(path), "bytes": size, "format_version": vfile.version,
        "coding": vfile.coding, "tokenizer_id": vfile.tokenizer_id, "prior_id": vfile.prior_id,
        "tokenizer": shipped_name(vfile.tokenizer_id),
        "codebook_size": vfile.codebook_size, "indices_per_token": vfile.depth,
        "bpp": size * 8 / pixels,
        "images": [{
            "name": im.name, "height": im.image_size[0], "width": im.image_size[1],
            "frames": im.frames, "fps": list(im.fps),
            "token_shape": list(im.token_shape), "tokens": im.num_tokens,
            "payload_bytes": len(im.payload),
            "payload_bpp": len(im.payload) * 8 / (im.image_size[0] * im.image_size[1]
                                                  * im.frames),
            "alpha_composited_on_white": im.alpha,
        } for im in vfile.images],
    }


def rate_text(fps: tuple[int, int]) -> str:
    """(25, 1) -> "25", (30000, 1001) -> "29.97 (30000/1001)"."""
    num, den = fps
    if den == 1:
        return str(num)
    return f"{num / den:.4g} ({num}/{den})"


def run(args: argparse.Namespace) -> int:
    from vtok.codec.container import VtokFormatError

    try:
        info = describe(args.input)
    except VtokFormatError as err:
        print(f"vtok info: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['file']}: .vtok version {info['format_version']}, {info['bytes']} bytes, "
          f"{len(info['images'])} image(s), {info['bpp']:.4f} bpp overall")
    name = f" ({info['tokenizer']})" if info["tokenizer"] else " (not a shipped one)"
    print(f"tokenizer {info['tokenizer_id']}{name}, codebook {info['codebook_size']}"
          f"{' x' + str(info['indices_per_token']) if info['indices_per_token'] > 1 else ''}, "
          f"{info['coding']} coding"
          + (f" (prior {info['prior_id']})" if info["prior_id"] else ""))
    for i, im in enumerate(info["images"]):
        alpha = ", alpha composited on white" if im["alpha_composited_on_white"] else ""
        shape = "x".join(map(str, im["token_shape"]))
        label = f" {im['name']!r}" if im["name"] else ""
        if im["frames"] > 1:
            print(f"  clip {i}{label}: {im['width']}x{im['height']} px, {im['frames']} frames "
                  f"at {rate_text(im['fps'])} fps, {im['tokens']} tokens ({shape}), "
                  f"payload {im['payload_bytes']} bytes = {im['payload_bpp']:.4f} bpp "
                  f"per frame")
            continue
        print(f"  image {i}{label}: {im['width']}x{im['height']} px, "
              f"{im['tokens']} tokens ({shape}), "
              f"payload {im['payload_bytes']} bytes = {im['payload_bpp']:.4f} bpp{alpha}")
    return 0
