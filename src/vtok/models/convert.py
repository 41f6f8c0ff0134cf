"""Convert released tokenizer checkpoints into vtok tokenizer folders.

Sources: LlamaGen's VQ (`vq_ds16_c2i.pt`, weights under `["model"]`), taming-transformers'
VQGAN (a Lightning `.ckpt`, weights under `["state_dict"]`, the training loss's `loss.*`
tensors dropped) and TiTok (a Hugging Face folder: `config.json` + `model.safetensors`). Each
also converts from a bare safetensors file of its state dict.

Nothing is ever unpickled beyond tensors and plain containers: `.pt`/`.ckpt`/`.bin` files are
read with `torch.load(weights_only=True)`, and a checkpoint that needs more is refused with the
reason. The configuration is read off the tensors' shapes (and TiTok's `config.json` for its
attention heads), or taken from a preset; every tensor name and shape is checked before
anything is written, and the folder is written under a temporary name, then renamed.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import secrets
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from vtok.models.base import Tokenizer, TokenizerConfig
from vtok.models.titok_published import PublishedTiTok, PublishedTiTokConfig
from vtok.models.vqgan import LlamaGenVQ, LlamaGenVQConfig, TamingVQGAN, TamingVQGANConfig

SOURCES = ("llamagen", "taming", "titok")
ARCHITECTURE = {"llamagen": LlamaGenVQ, "taming": TamingVQGAN, "titok": PublishedTiTok}
# a tensor only this source's checkpoints hold: how a checkpoint's family is recognised
SIGNATURE = {"llamagen": "encoder.conv_blocks.0.res.0.conv1.weight",
             "taming": "encoder.down.0.block.0.conv1.weight",
             "titok": "encoder.patch_embed.weight"}
# released TiTok sizes (modeling/modules/blocks.py): attention heads per model size
TITOK_HEADS = {"small": 8, "base": 12, "large": 16}
TITOK_WIDTH_HEADS = {512: 8, 768: 12, 1024: 16}


@dataclass
class Conversion:
    """What `convert` did: the loaded tokenizer, the folder written, the tensors dropped."""

    tokenizer: Tokenizer
    out: Path
    dropped: list[str] = field(default_factory=list)
    tensors: int = 0


# -- reading ---------------------------------------------------------------------------------
def read_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(top-level object of the checkpoint, the JSON config beside it if any). ValueError
    naming the file for anything unreadable."""
    path = Path(path)
    config = None
    if path.is_dir():
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise ValueError(f"{path}: a folder must hold model.safetensors (the Hugging Face "
                             f"layout); found {sorted(p.name for p in path.iterdir())[:8]}")
        if (path / "config.json").is_file():
            try:
                config = json.loads((path / "config.json").read_text())
            except (ValueError, OSError) as err:
                raise ValueError(f"{path / 'config.json'}: not valid JSON ({err})") from None
        path = weights
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        try:
            return load_file(path), config
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    obj = torch_load_tensors(path, RESAVE)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a dict of tensors")
    return obj, config


RESAVE = ("If you trust the file, re-save just its state dict, e.g. sd = torch.load(PATH, "
          "weights_only=False)['model'] (['state_dict'] for Lightning); "
          "safetensors.torch.save_file(sd, 'weights.safetensors'), and convert that")


def torch_load_tensors(path: Path, resave: str) -> Any:
    """`torch.load(path, weights_only=True)` (torch's restricted unpickler: tensors and plain
    containers, never code from the file), or one ValueError naming the file: unreadable
    (truncated, corrupt, not a checkpoint) or refused for holding another Python object, with
    `resave` saying what to do about that."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        needed = re.search(r"GLOBAL (\S+)", str(err))
        if needed is None:  # not a refusal: the bytes are no pickle of tensors at all
            detail = str(err).split("WeightsUnpickler error:")[-1].split("Check the doc")[0]
            detail = " ".join(detail.split())[:120]
            raise ValueError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt? "
                             f"({detail})") from None
        raise ValueError(
            f"{path}: refused: it holds a Python object ({needed.group(1)}) besides tensors, "
            f"and vtok reads checkpoints only with torch.load(weights_only=True), which never "
            f"runs code from the file. {resave}") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError,
            UnicodeDecodeError, KeyError, AttributeError, IndexError, TypeError) as err:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt? "
                         f"({type(err).__name__}: {str(err).strip()[:200]})") from None


def state_dict_of(obj: dict[str, Any], source: str, where: str) -> dict[str, Tensor]:
    """The tokenizer's tensors inside a checkpoint: under "state_dict" (Lightning), "model"
    (LlamaGen) or at the top level."""
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{where}: expected a dict of tensors (the state dict, or a checkpoint "
                         f"with it under 'state_dict' or 'model'); {bad[:3]} are not tensors")
    if SIGNATURE[source] not in obj:
        guess = [s for s, key in SIGNATURE.items() if key in obj and s != source]
        hint = (f"; it looks like a {guess[0]} checkpoint: use --from {guess[0]}" if guess
                else "")
        names = sorted(obj)[:3]
        raise ValueError(f"{where}: not a {source} checkpoint (no {SIGNATURE[source]}; its "
                         f"tensors start {names}){hint}")
    return obj


# -- key names -------------------------------------------------------------------------------
class KeyMap:
    """Renames between a release's tensor names and vtok's, both ways.

    `prefixes`: (release, vtok) templates of a name's start, `{i}`-style fields matching level
    or block numbers; a field named `r` counts levels from the other end (the releases index
    decoder levels by resolution, vtok by the order they run). `parts`: (release, vtok) runs
    of whole name segments renamed anywhere after the prefix.
    """

    def __init__(self, prefixes: list[tuple[str, str]], parts: list[tuple[str, str]]) -> None:
        self.prefixes = prefixes
        self.parts = parts

    @staticmethod
    def _pattern(template: str) -> re.Pattern[str]:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>\\d+)", re.escape(template))
        return re.compile(regex if template.endswith(".") else regex + r"(?=\.|$)")

    def _rename(self, key: str, pairs: list[tuple[str, str]], parts: list[tuple[str, str]],
                levels: int) -> str:
        for src, dst in pairs:
            m = self._pattern(src).match(key)
            if m:
                values = {k: (levels - 1 - int(v) if k == "r" else int(v))
                          for k, v in m.groupdict().items()}
                key, start = dst.format(**values) + key[m.end():], len(dst.format(**values))
                break
        else:
            start = 0
        head, tail = key[:start], "." + key[start:] + "."
        for src, dst in parts:
            tail = tail.replace(f".{src}.", f".{dst}.")
        return head + tail[1:-1]

    def to_vtok(self, key: str, levels: int) -> str:
        return self._rename(key, self.prefixes, self.parts, levels)

    def to_release(self, key: str, levels: int) -> str:
        swap = lambda pairs: [(b, a) for a, b in pairs]  # noqa: E731
        return self._rename(key, swap(self.prefixes), swap(self.parts), levels)


def _vqgan_prefixes(res: str, attn: str, down: str, up: str, decoder_level: str) -> list:
    rules = [(f"encoder.{down}.{{i}}.{res}.{{j}}.", "encoder.stages.{i}.blocks.{j}."),
             (f"encoder.{down}.{{i}}.{attn}.{{j}}.", "encoder.stages.{i}.attns.{j}."),
             (f"encoder.{down}.{{i}}.downsample.", "encoder.stages.{i}.resample."),
             (f"decoder.{up}.{{{decoder_level}}}.{res}.{{j}}.",
              f"decoder.stages.{{{decoder_level}}}.blocks.{{j}}."),
             (f"decoder.{up}.{{{decoder_level}}}.{attn}.{{j}}.",
              f"decoder.stages.{{{decoder_level}}}.attns.{{j}}."),
             (f"decoder.{up}.{{{decoder_level}}}.upsample.",
              f"decoder.stages.{{{decoder_level}}}.resample."),
             ("quantize.embedding.weight", "quantizer.codebook")]
    return rules


# a TiTok transformer block's tensors: nn.MultiheadAttention's and the MLP's names
TRANSFORMER_PARTS = [("ln_1.", "norm1."), ("ln_2.", "norm2."),
                     ("attn.in_proj_weight", "attn.qkv.weight"),
                     ("attn.in_proj_bias", "attn.qkv.bias"), ("attn.out_proj.", "attn.proj."),
                     ("mlp.c_fc.", "mlp.0."), ("mlp.c_proj.", "mlp.2.")]
KEYMAPS = {
    # LlamaGen stores decoder levels in the order they run, as vtok does
    "llamagen": KeyMap(
        _vqgan_prefixes("res", "attn", "conv_blocks", "conv_blocks", "i")
        + [(f"{part}.mid.{{i}}.", f"{part}.middle.{{i}}.") for part in ("encoder", "decoder")],
        [("nin_shortcut", "skip"), ("proj_out", "proj")]),
    "taming": KeyMap(
        _vqgan_prefixes("block", "attn", "down", "up", "r")
        + [(f"{part}.mid.{name}.", f"{part}.middle.{i}.") for part in ("encoder", "decoder")
           for i, name in enumerate(("block_1", "attn_1", "block_2"))],
        [("nin_shortcut", "skip"), ("proj_out", "proj")]),
    "titok": KeyMap(
        [("latent_tokens", "encoder.latent_tokens"),
         *[(f"{part}.{a}", f"{part}.{b}") for part in ("encoder", "decoder") for a, b in (
             ("class_embedding", "class_token"), ("positional_embedding", "position"),
             ("latent_token_positional_embedding", "latent_position"),
             ("ln_pre.", "norm_pre."), ("ln_post.", "norm_post."),
             *[(f"transformer.{{i}}.{a}", f"blocks.{{i}}.{b}") for a, b in TRANSFORMER_PARTS],
             ("transformer.{i}.", "blocks.{i}."))],
         ("encoder.conv_out.", "encoder.to_latent."),
         ("decoder.decoder_embed.", "decoder.from_latent."),
         ("decoder.ffn.", "decoder.to_logits."),
         ("quantize.embedding.weight", "quantizer.codebook"),
         ("pixel_quantize.embedding.weight", "pixel_codes"),
         ("pixel_decoder.mid.{i}.", "pixel_decoder.middle.{i}."),
         ("pixel_decoder.up.{r}.block.{j}.", "pixel_decoder.stages.{r}.blocks.{j}."),
         ("pixel_decoder.up.{r}.upsample_conv.", "pixel_decoder.stages.{r}.upsample.conv.")],
        [("nin_shortcut", "skip")]),
}
# tensors of a release that are not part of the tokenizer: dropped and reported
DROPPED = {"llamagen": ("quantize.codebook_used",),  # usage counts, written only in training
           "taming": ("loss.",), "titok": ()}


def _levels(config: TokenizerConfig) -> int:
    if isinstance(config, PublishedTiTokConfig):
        return len(config.pixel_channel_mult)
    return len(config.channel_mult)


# -- configuration ---------------------------------------------------------------------------
def _count(state: dict[str, Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    found = {int(m.group(1)) for k in state if (m := regex.match(k))}
    return max(found) + 1 if found else 0


def _shape(state: dict[str, Tensor], key: str, where: str) -> tuple[int, ...]:
    if key not in state:
        raise ValueError(f"{where}: no tensor {key}, which every checkpoint of this kind has")
    return tuple(state[key].shape)


def _multipliers(widths: list[int], where: str) -> tuple[int, tuple[int, ...]]:
    base = min(widths)
    if base < 1 or any(w % base for w in widths):
        raise ValueError(f"{where}: level widths {widths} are not multiples of one width")
    return base, tuple(w // base for w in widths)


def infer_config(source: str, state: dict[str, Tensor], hf_config: dict[str, Any] | None,
                 where: str, overrides: dict[str, Any]) -> TokenizerConfig:
    """The architecture config a release's tensors imply (checked again, tensor by tensor,
    when the weights are loaded)."""
    if source == "titok":
        return _titok_config(state, hf_config, where, overrides)
    if source == "llamagen":
        stage, block = "encoder.conv_blocks.{}.", "res"
    else:
        stage, block = "encoder.down.{}.", "block"
    levels = _count(state, re.escape(stage.format("@")).replace("@", r"(\d+)"))
    first = stage.format(0) + block
    channels = _shape(state, "encoder.conv_in.weight", where)[0]
    widths = [_shape(state, f"{stage.format(i)}{block}.0.conv1.weight", where)[0]
              for i in range(levels)]
    if any(w % channels for w in widths):
        raise ValueError(f"{where}: level widths {widths} are not multiples of conv_in's "
                         f"{channels} channels")
    codes, dim = _shape(state, "quantize.embedding.weight", where)
    if source == "llamagen":
        attention = (2 ** (levels - 1),)  # LlamaGen: the lowest-resolution level only
    else:
        attention = tuple(2**i for i in range(levels)
                          if f"{stage.format(i)}attn.0.norm.weight" in state)
    config_class = LlamaGenVQConfig if source == "llamagen" else TamingVQGANConfig
    options = {**config_class().quantizer_options, "codebook_size": codes}
    fields = dict(channels=channels, channel_mult=tuple(w // channels for w in widths),
                  num_res_blocks=_count(state, re.escape(first) + r"\.(\d+)\."),
                  z_channels=_shape(state, "encoder.conv_out.weight", where)[0],
                  attention_factors=attention, latent_dim=dim, quantizer_options=options)
    return config_class(**{**fields, **overrides})


def _titok_config(state: dict[str, Tensor], hf_config: dict[str, Any] | None, where: str,
                  overrides: dict[str, Any]) -> PublishedTiTokConfig:
    vq = ((hf_config or {}).get("model") or {}).get("vq_model") or {}
    if not isinstance(vq, dict):
        vq = {}
    if vq.get("quantize_mode", "vq") != "vq" or not vq.get("finetune_decoder", True) \
            or not vq.get("is_legacy", True):
        raise ValueError(
            f"{where}: a TiTok with quantize_mode={vq.get('quantize_mode', 'vq')!r}, "
            f"finetune_decoder={vq.get('finetune_decoder', True)}, "
            f"is_legacy={vq.get('is_legacy', True)}; vtok converts the released VQ tokenizers "
            f"with the MaskGIT-VQGAN decoder (TiTok-L-32, B-64, S-128: 'vq', true, true)")
    width, _, patch, _ = _shape(state, "encoder.patch_embed.weight", where)
    positions = _shape(state, "encoder.positional_embedding", where)[0] - 1
    grid = round(positions**0.5)
    if grid * grid != positions:
        raise ValueError(f"{where}: {positions} patch positions do not make a square grid")
    decoder_width = _shape(state, "decoder.class_embedding", where)[-1]
    codes, code_dim = _shape(state, "pixel_quantize.embedding.weight", where)
    levels = _count(state, r"pixel_decoder\.up\.(\d+)\.")
    widths = [_shape(state, f"pixel_decoder.up.{i}.block.0.conv1.weight", where)[0]
              for i in range(levels)]
    base, mult = _multipliers(widths, where)

    def heads(size_key: str, w: int, name: str) -> int:
        if name in overrides:
            return overrides[name]
        size = vq.get(size_key)
        if size in TITOK_HEADS:
            return TITOK_HEADS[size]
        if size is None and w in TITOK_WIDTH_HEADS:
            return TITOK_WIDTH_HEADS[w]
        raise ValueError(f"{where}: cannot tell the attention heads of a width-{w} "
                         f"{'encoder' if name == 'heads' else 'decoder'} (model size "
                         f"{size!r}, not one of {sorted(TITOK_HEADS)}); give them: "
                         f"--set {name}=N")

    fields = dict(
        image_size=grid * patch, patch_size=patch, width=width,
        depth=_count(state, r"encoder\.transformer\.(\d+)\."), heads=heads(
            "vit_enc_model_size", width, "heads"),
        decoder_width=decoder_width, decoder_depth=_count(state, r"decoder\.transformer\.(\d+)\."),
        decoder_heads=heads("vit_dec_model_size", decoder_width, "decoder_heads"),
        num_latent_tokens=_shape(state, "latent_tokens", where)[0],
        latent_dim=_shape(state, "encoder.conv_out.weight", where)[0],
        quantizer_options={**PublishedTiTokConfig().quantizer_options,
                           "codebook_size": _shape(state, "quantize.embedding.weight", where)[0]},
        pixel_codes=codes, pixel_code_dim=code_dim, pixel_channels=base, pixel_channel_mult=mult,
        pixel_res_blocks=_count(state, r"pixel_decoder\.up\.0\.block\.(\d+)\."))
    return PublishedTiTokConfig(**{**fields, **overrides})


# -- converting ------------------------------------------------------------------------------
def tokenizer_from_release(source: str, path: str | Path, preset: str | None = None,
                           overrides: dict[str, Any] | None = None,
                           ) -> tuple[Tokenizer, list[str], int]:
    """(tokenizer with the release's weights, names of the tensors dropped, tensors read).

    ValueError naming the file for an unreadable file, another architecture's checkpoint, or
    tensors whose names or shapes do not fit."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; one of {', '.join(SOURCES)}")
    path, overrides = Path(path), dict(overrides or {})
    obj, hf_config = read_checkpoint(path)
    state = state_dict_of(obj, source, str(path))
    dropped = sorted(k for k in state if k.startswith(DROPPED[source]))
    state = {k: v for k, v in state.items() if k not in set(dropped)}
    try:
        if preset is not None:
            from vtok.models.presets import preset_config

            config = preset_config(preset, **overrides)
            if not isinstance(config, ARCHITECTURE[source].config_class):
                raise ValueError(f"preset {preset!r} is not a {source} tokenizer")
        else:
            config = infer_config(source, state, hf_config, str(path), overrides)
        model = ARCHITECTURE[source](config)
    except (TypeError, ValueError) as err:
        message = str(err)
        raise ValueError(message if str(path) in message else f"{path}: {message}") from None
    model.load_state_dict(_mapped_state(source, state, model, path))
    return model.eval(), dropped, len(state) + len(dropped)


def _mapped_state(source: str, state: dict[str, Tensor], model: Tokenizer,
                  path: Path) -> dict[str, Tensor]:
    """The release's tensors under vtok's names, after checking names and shapes; vtok's own
    quantizer bookkeeping buffers (usage counters) keep their fresh values."""
    keymap, levels = KEYMAPS[source], _levels(model.config)
    own = model.state_dict()
    wanted = {k for k in own if not k.startswith("quantizer.") or k == "quantizer.codebook"}
    mapped = {keymap.to_vtok(k, levels): k for k in state}
    missing = sorted(keymap.to_release(k, levels) for k in wanted - set(mapped))
    unexpected = sorted(v for k, v in mapped.items() if k not in wanted)
    wrong = sorted(f"{mapped[k]} {tuple(state[mapped[k]].shape)}, expected {tuple(own[k].shape)}"
                   for k in wanted & set(mapped) if state[mapped[k]].shape != own[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{name} {items[:4]}{' ...' if len(items) > 4 else ''} ({len(items)})"
                 for name, items in (("missing", missing), ("unexpected", unexpected),
                                     ("wrong shape", wrong)) if items]
        raise ValueError(f"{path}: its tensors do not fit a {model.architecture} tokenizer of "
                         f"{_summary(model.config)}: {'; '.join(parts)}")
    out = {k: v for k, v in own.items() if k not in wanted}
    for k in wanted:
        out[k] = state[mapped[k]].to(own[k].dtype)
    return out


def _summary(config: TokenizerConfig) -> str:
    if isinstance(config, PublishedTiTokConfig):
        return (f"width {config.width} x {config.depth} layers, "
                f"{config.num_latent_tokens} tokens")
    return f"channels {config.channels} x {list(config.channel_mult)}"


def convert(source: str, path: str | Path, out: str | Path, preset: str | None = None,
            overrides: dict[str, Any] | None = None, force: bool = False) -> Conversion:
    """Write the release checkpoint `path` as a vtok tokenizer folder `out` (config.json +
    model.safetensors), whole or not at all. `force` replaces an existing folder."""
    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not force:
        raise ValueError(f"{out}: already exists; pass --force to replace it")
    model, dropped, count = tokenizer_from_release(source, path, preset, overrides)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    old = None
    try:
        model.save_pretrained(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.{secrets.token_hex(4)}.old")
            out.rename(old)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return Conversion(model, out, dropped, count)
