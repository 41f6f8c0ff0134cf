"""The trained tokenizers shipped inside the package (`vtok/pretrained/NAME/`), described from
their `config.json` alone: names, folders, token counts and tokenizer ids, without torch.

`save_pretrained` stores the tokenizer id (the hash of the config and the weights as they
load) in `config.json`, so telling which shipped tokenizer made a .vtok file reads a few small
JSON files; loading the model for coding recomputes the hash and refuses a mismatch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
CONFIG_FILE = "config.json"


def read_folder_config(directory: Path) -> dict[str, Any]:
    """The parsed `config.json` of a tokenizer folder; ValueError naming the file if it is not
    one ("architecture" and "config" present)."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{directory}: not a tokenizer directory (no {CONFIG_FILE})")
    try:
        data = json.loads(path.read_text())
        if not isinstance(data["architecture"], str) or not isinstance(data["config"], dict):
            raise TypeError("architecture must be a string and config an object")
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: malformed tokenizer config ({err})") from None
    return data


def list_pretrained() -> list[dict[str, Any]]:
    """The trained tokenizers shipped inside the package, with their token counts and ids."""
    found = []
    for directory in sorted(PRETRAINED_DIR.glob("*/")):
        if (directory / CONFIG_FILE).exists():
            data = read_folder_config(directory)
            arch, config = data["architecture"], data["config"]
            found.append({"name": directory.name, "architecture": arch, "path": str(directory),
                          "config": config, "tokenizer_id": data.get("tokenizer_id"),
                          **_token_counts(arch, config)})
    return found


def _token_counts(arch: str, config: dict[str, Any]) -> dict[str, Any]:
    if arch == "titok":
        k = config["num_latent_tokens"]
        return {"tokens": f"1..{k} per image (variable length)", "max_tokens": k}
    factor = 2 ** (len(config["channel_mult"]) - 1)
    n = (256 // factor) ** 2
    text = f"{n} per 256x256 image (x{factor} grid)"
    if config.get("time_downsample"):  # codes clips: a grid for frame 0, then one per group
        text += f"; clips: one grid for the first frame, then one per {config['time_downsample']}"
    return {"tokens": text, "max_tokens": n}


def tokenizer_dir(name_or_dir: str | Path) -> Path:
    """The folder of a shipped tokenizer (by name) or the given tokenizer folder."""
    path = Path(name_or_dir)
    if path.is_dir():
        return path
    shipped = {p["name"]: Path(p["path"]) for p in list_pretrained()}
    if str(name_or_dir) in shipped:
        return shipped[str(name_or_dir)]
    raise ValueError(f"{name_or_dir!r} is neither a tokenizer directory nor a shipped tokenizer "
                     f"(shipped: {', '.join(shipped) or 'none'})")


def shipped_name(tokenizer_id: str) -> str | None:
    """Name of the shipped tokenizer whose stored id is `tokenizer_id`, if any (reads the
    stored ids only; `vtok.models.presets.shipped_with_id` also loads and checks it)."""
    for entry in list_pretrained():
        if entry["tokenizer_id"] == tokenizer_id:
            return entry["name"]
    return None
