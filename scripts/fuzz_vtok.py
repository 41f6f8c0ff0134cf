"""Fuzz the .vtok reader and token decoding with mutated files.

    python scripts/fuzz_vtok.py --cases 20000 [--seed 0] [--json out.json]

Seeds are real files of the shipped tokenizers (conv2d-f8 grid tokens, titok-flex sequences;
raw and entropy coded; one and several images). Each case mutates one seed (bit flips, byte
writes, truncation, insertion, deletion, splices of two seeds, edits of header integers) and,
for half the cases, rewrites the CRC32 so that the mutation reaches the parser's later checks
and the payload decoders. Each case must end in tokens or in `VtokFormatError`; anything else,
a case over --max-seconds, or the process growing past --max-gb, is a failure. Pixel decoding
is not part of a case: its cost is bounded by the checks a case does run (image and token
limits, `Tokenizer.check_tokens`).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import struct
import sys
import time
import traceback
import zlib
from dataclasses import dataclass, field

import torch


@dataclass
class Target:
    name: str
    tokenizer: object
    coders: dict  # coding -> coder


@dataclass
class FuzzReport:
    cases: int = 0
    decoded: int = 0  # cases that gave tokens (mutations the format cannot see)
    format_errors: int = 0
    failures: list[str] = field(default_factory=list)
    slowest_seconds: float = 0.0
    peak_rss_gb: float = 0.0


def targets() -> list[Target]:
    import vtok
    from vtok.codec.tokens_file import make_coder
    from vtok.models.presets import tokenizer_dir

    out = []
    for name in ("conv2d-f8", "titok-flex"):
        tok, directory = vtok.load(name), tokenizer_dir(name)
        out.append(Target(name, tok, {c: make_coder(c, tok, directory)
                                      for c in ("raw", "entropy")}))
    return out


def seeds(found: list[Target]) -> list[bytes]:
    """Valid files: every target, both codings, one image and three of different sizes."""
    from vtok.codec import to_vtok

    gen = torch.Generator().manual_seed(0)
    files = []
    for target in found:
        tok = target.tokenizer
        images = [torch.rand(1, 3, h, w, generator=gen) for h, w in ((32, 32), (40, 56), (24, 8))]
        batches = [tok.encode(x) for x in images]
        for coder in target.coders.values():
            files.append(to_vtok(batches[:1], tok.codebook_size, coder, names=["one"]).to_bytes())
            files.append(to_vtok(batches, tok.codebook_size, coder,
                                 names=["a", "b", "c"]).to_bytes())
    return files


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    body = bytearray(data[:-4])
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        kind = rng.randrange(7)
        pos = rng.randrange(len(body)) if body else 0
        if kind == 0 and body:  # flip a bit
            body[pos] ^= 1 << rng.randrange(8)
        elif kind == 1 and body:  # write a byte
            body[pos] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif kind == 2:  # truncate
            del body[rng.randrange(len(body) + 1):]
        elif kind == 3:  # insert bytes
            body[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        elif kind == 4 and body:  # delete bytes
            del body[pos : pos + rng.randrange(1, 9)]
        elif kind == 5:  # splice another seed's tail
            other = rng.choice(pool)
            body = body[:pos] + bytearray(other[rng.randrange(len(other)) : -4])
        elif len(body) >= 4:  # an integer field set to an edge value
            pos = rng.randrange(len(body) - 3)
            value = rng.choice((0, 1, 2, 255, 256, 1 << 16, 1 << 20, 1 << 24, 0x7FFFFFFF,
                                0xFFFFFFFF))
            body[pos : pos + 4] = struct.pack("<I", value)
    tail = data[-4:] if rng.random() < 0.5 else struct.pack("<I", zlib.crc32(bytes(body)))
    return bytes(body) + tail


def one_case(data: bytes, by_id: dict) -> bool:
    """True if tokens came out; VtokFormatError propagates; anything else is a failure."""
    from vtok.codec import VtokFile, VtokFormatError, from_vtok

    vfile = VtokFile.from_bytes(data)
    target = by_id.get(vfile.tokenizer_id)
    if target is None:
        return False  # another tokenizer: decode refuses it by id before any work
    try:
        coder = target.coders[vfile.coding]
        from_vtok(vfile, coder, target.tokenizer)
    except VtokFormatError:
        raise
    except ValueError as err:  # refusals of a readable file: tokenizer or prior mismatch
        if "prior" in str(err) or "tokenizer" in str(err):
            return False
        raise
    return True


def run(cases: int, seed: int = 0, max_seconds: float = 10.0, max_gb: float = 2.0,
        progress: bool = False) -> FuzzReport:
    from tqdm import tqdm

    from vtok.codec import VtokFormatError

    found = targets()
    by_id = {t.tokenizer.tokenizer_id: t for t in found}
    pool = seeds(found)
    rng = random.Random(seed)
    report = FuzzReport()
    for i in tqdm(range(cases), desc="fuzz", disable=not progress):
        data = mutate(rng, rng.choice(pool), pool)
        start = time.perf_counter()
        try:
            report.decoded += one_case(data, by_id)
        except VtokFormatError:
            report.format_errors += 1
        except Exception:  # noqa: BLE001 - every other exception is what the fuzzer hunts
            report.failures.append(f"case {i} ({data.hex()}): {traceback.format_exc(limit=3)}")
        seconds = time.perf_counter() - start
        report.slowest_seconds = max(report.slowest_seconds, seconds)
        if seconds > max_seconds:
            report.failures.append(f"case {i} took {seconds:.1f} s ({data.hex()})")
        report.cases += 1
    report.peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if report.peak_rss_gb > max_gb:
        report.failures.append(f"peak RSS {report.peak_rss_gb:.2f} GB over {max_gb} GB")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--max-gb", type=float, default=2.0)
    parser.add_argument("--json", default=None, help="write the report here")
    args = parser.parse_args()
    started = time.time()
    report = run(args.cases, args.seed, args.max_seconds, args.max_gb, progress=True)
    result = {**report.__dict__, "failures": report.failures[:20],
              "failure_count": len(report.failures), "minutes": (time.time() - started) / 60}
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
