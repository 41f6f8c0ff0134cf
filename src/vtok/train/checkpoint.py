"""Checkpoints: every tensor in one safetensors file plus a JSON state file, written to a
temporary folder and renamed into place, so a killed job never leaves a half checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

TENSORS, STATE = "state.safetensors", "state.json"


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
    (tmp / STATE).write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(directory.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: Path) -> Path | None:
    found = sorted(p for p in directory.glob("step-*") if (p / STATE).exists())
    return found[-1] if found else None


def load_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    return load_file(str(path / TENSORS)), json.loads((path / STATE).read_text())


def module_state(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    start = prefix + "."
    return {k[len(start):]: v for k, v in tensors.items() if k.startswith(start)}


def restore_optimizer(opt: torch.optim.Optimizer, name: str, tensors: dict[str, Tensor],
                      meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    prefix = f"{name}.state."
    for key, value in tensors.items():
        if key.startswith(prefix):
            idx, field = key[len(prefix):].split(".", 1)
            state.setdefault(int(idx), {})[field] = value
    opt.load_state_dict({"state": state, "param_groups": meta["optimizers"][name]})


def rng_state() -> dict[str, Tensor]:
    """This process's random generator states (CPU, and the current GPU's if any)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
