"""scripts/fuzz_vtok.py: mutated real files end in tokens or VtokFormatError, nothing else."""

import importlib.util
import random
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "scripts" / "fuzz_vtok.py"


def _script():
    spec = importlib.util.spec_from_file_location("fuzz_vtok", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_vtok"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_mutations_change_the_file():
    fuzz = _script()
    rng = random.Random(0)
    seed = bytes(range(60)) + b"\x00\x00\x00\x00"
    assert sum(fuzz.mutate(rng, seed, [seed]) != seed for _ in range(50)) >= 45


def test_three_hundred_mutated_files_raise_only_format_errors():
    # no time limit here (a loaded machine is slow, never wrong); the script's own runs keep one
    report = _script().run(300, seed=1, max_seconds=float("inf"))
    assert report.failures == []
    assert report.cases == 300
    assert report.format_errors + report.decoded <= 300
    assert report.format_errors > 100  # most mutations are caught (CRC, then every field)
