"""Checkpoints: every tensor in one safetensors file plus a JSON state file, written to a
temporary folder and renamed into place, so a killed job never leaves a half checkpoint.

The state records the SHA-256 of the tensor file and of its own canonical JSON, so a
checkpoint damaged after it was written (a truncated copy, overwritten bytes, an edited state)
is refused when read instead of being loaded; `load_newest` then falls back to an older one.
Checkpoints written before the checksums existed are read without them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from vtok.files import atomic_write_text, file_sha256

TENSORS, STATE = "state.safetensors", "state.json"
TENSORS_SUM, STATE_SUM = "tensors_sha256", "state_sha256"
T = TypeVar("T")


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be used; the message names it and what is wrong."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"checkpoint {path}: {problem}")
        self.path, self.problem = path, problem


def save_checkpoint(directory: Path, step: int, modules: dict[str, dict[str, Tensor]],
                    optimizers: dict[str, torch.optim.Optimizer], state: dict[str, Any],
                    keep: int) -> Path:
    tensors: dict[str, Tensor] = {}
    for prefix, sd in modules.items():
        tensors.update({f"{prefix}.{k}": v for k, v in sd.items()})
    meta: dict[str, Any] = {"step": step, **state, "optimizers": {}}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        for idx, entries in sd["state"].items():
            for key, value in entries.items():
                tensors[f"{name}.state.{idx}.{key}"] = value
        meta["optimizers"][name] = sd["param_groups"]
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}

    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:07d}"
    tmp = directory / f".tmp-step-{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(tensors, str(tmp / TENSORS))
    # the state, with the tensor file's checksum, is written after the tensors it vouches for
    meta = json.loads(json.dumps(meta))  # what a reader will see (tuples become lists)
    meta[TENSORS_SUM] = file_sha256(tmp / TENSORS)
    meta[STATE_SUM] = _state_sha256(meta)
    atomic_write_text(tmp / STATE, json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for path in list_checkpoints(directory):
        # newer ones were passed over by a resume (damaged, unreadable then or not fitting):
        # set them aside under a name no resume reads, rather than delete what may be intact
        if _step_of(path) > step:
            aside = directory / f"passed-over-{path.name}"
            shutil.rmtree(aside, ignore_errors=True)
            path.rename(aside)
    for old in list_checkpoints(directory)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(directory: Path) -> list[Path]:
    """Every checkpoint folder in `directory` (intact or not), newest first."""
    found = [p for p in directory.glob("step-*") if p.is_dir() and _step_of(p) >= 0]
    return sorted(found, key=_step_of, reverse=True)


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest checkpoint folder holding a state file (not verified: see `load_newest`)."""
    found = [p for p in list_checkpoints(directory) if (p / STATE).exists()]
    return found[0] if found else None


def load_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and state of one checkpoint folder, verified: CheckpointError when the state is
    not a JSON object with its step, or a checksum or the safetensors file does not check out."""
    try:
        meta = json.loads((path / STATE).read_text())
    except FileNotFoundError:
        raise CheckpointError(path, f"no {STATE}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(path, f"{STATE} is not readable JSON ({err})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(path, f"{STATE} holds a {type(meta).__name__}, not an object")
    if STATE_SUM in meta and meta[STATE_SUM] != _state_sha256(meta):
        raise CheckpointError(path, f"{STATE} does not match its checksum (edited or damaged)")
    step = meta.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step != _step_of(path):
        raise CheckpointError(path, f"{STATE} gives step {step!r}, the folder name "
                                    f"{_step_of(path)}")
    if not isinstance(meta.get("optimizers"), dict):
        raise CheckpointError(path, f"{STATE} has no optimizer settings")
    if not (path / TENSORS).is_file():
        raise CheckpointError(path, f"no {TENSORS}")
    try:
        tensors_sum = file_sha256(path / TENSORS)
    except OSError as err:
        raise CheckpointError(path, f"{TENSORS} cannot be read ({err})") from None
    if TENSORS_SUM in meta and meta[TENSORS_SUM] != tensors_sum:
        raise CheckpointError(path, f"{TENSORS} does not match the checksum in {STATE} "
                                    f"(truncated or overwritten)")
    try:
        tensors = load_file(str(path / TENSORS))
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise CheckpointError(path, f"{TENSORS} is not a readable safetensors file "
                                    f"({err})") from None
    return tensors, meta


def load_newest(directory: Path, use: Callable[[Path, dict[str, Tensor], dict[str, Any]], T],
                warn: bool = True, ranks: Ranks | None = None) -> T:
    """`use(path, tensors, state)` of the newest checkpoint in `directory` that loads and that
    `use` accepts (it raises CheckpointError for one that does not fit). Each one passed over
    is named in a warning with the reason; ValueError naming them all when none is usable.

    Under torchrun, pass `ranks`: every rank then tries the checkpoints rank 0 lists, in order,
    and keeps the first one that every rank could use, so all ranks resume from the same step
    (a checkpoint one rank cannot read is passed over by all of them)."""
    paths = list_checkpoints(directory)
    if ranks is not None:
        paths = [directory / name for name in ranks.from_rank0([p.name for p in paths])]
    problems = []
    for path in paths:
        try:
            tensors, meta = load_checkpoint(path)
            result, problem = use(path, tensors, meta), None
        except CheckpointError as err:
            problem = err.problem
        if ranks is not None and not ranks.all_true(problem is None) and problem is None:
            problem = "another rank could not use it"
        if problem is None:
            return result
        problems.append(f"{path.name}: {problem}")
        if warn:
            warnings.warn(f"checkpoint {path}: {problem}; trying an older checkpoint",
                          stacklevel=2)
    if not problems:
        raise ValueError(f"{directory}: no checkpoint")
    raise ValueError(f"{directory.parent}: no usable checkpoint in {directory} "
                     f"({'; '.join(problems)})")


class Ranks(Protocol):
    """What `load_newest` needs from a process group (see vtok.train.distributed)."""

    def from_rank0(self, names: list[str]) -> list[str]: ...

    def all_true(self, flag: bool) -> bool: ...


def _state_sha256(meta: dict[str, Any]) -> str:
    rest = {k: v for k, v in meta.items() if k != STATE_SUM}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def _step_of(path: Path) -> int:
    digits = path.name[len("step-"):]
    return int(digits) if digits.isdigit() else -1


def module_state(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    start = prefix + "."
    return {k[len(start):]: v for k, v in tensors.items() if k.startswith(start)}


def restore_optimizer(opt: torch.optim.Optimizer, name: str, tensors: dict[str, Tensor],
                      meta: dict[str, Any]) -> None:
    """Load optimizer `name` from a checkpoint; ValueError (before changing `opt`) when its
    groups or state tensors do not fit `opt`'s parameters."""
    groups = meta["optimizers"].get(name)
    params = [p for group in opt.param_groups for p in group["params"]]
    state: dict[int, dict[str, Tensor]] = {}
    prefix = f"{name}.state."
    for key, value in tensors.items():
        if key.startswith(prefix):
            idx, _, field = key[len(prefix):].partition(".")
            if not idx.isdigit() or int(idx) >= len(params) or not field:
                raise ValueError(f"optimizer {name}: unexpected tensor {key}")
            if value.ndim and value.shape != params[int(idx)].shape:
                raise ValueError(f"optimizer {name}: {key} has shape {tuple(value.shape)}, its "
                                 f"parameter {tuple(params[int(idx)].shape)}")
            state.setdefault(int(idx), {})[field] = value
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise ValueError(f"optimizer {name}: no parameter groups")
    opt.load_state_dict({"state": state, "param_groups": groups})


def rng_state() -> dict[str, Tensor]:
    """This process's random generator states (CPU, and the current GPU's if any)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Tensor]) -> None:
    """Set the generators from `rng_state()`'s output; ValueError if it is not one."""
    cpu = state.get("cpu")
    now = torch.get_rng_state()
    if cpu is None or cpu.dtype != now.dtype or cpu.shape != now.shape:
        raise ValueError("no CPU random generator state of the expected size")
    torch.set_rng_state(cpu)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
