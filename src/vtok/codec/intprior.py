"""The token prior in integer arithmetic, so that entropy-coded files decode anywhere.

A trained `TokenPrior` (float, for training) is converted once into integer tables and
weights (after Ballé et al., "Integer networks for data compression with latent-variable
models", 2019). Every value computed from them is an integer: table sums, matrix products of
small integers carried in float64 (each partial sum stays below 2**53, so any summation order,
thread count, batch shape, CPU or GPU gives the same exact result), fixed-point rescaling by an
integer multiplier and a floor shift, and activations and exponentials read from tables that
are stored in the file rather than computed. The coding frequencies are normalised to a total
of 2**24 in int64, so the range coder is handed the same integers wherever the file is read
(constriction turns them into its own 24-bit model by fixed IEEE double operations, the same on
every machine).

The network, for one token with context symbols c_1..c_S (and position p for sequences):

    h1 = bias1 + sum_s table[s, c_s] (+ table[position p])         first layer as a lookup
    a1 = act[clamp(floor(h1 / 2**LOOKUP_SHIFT), -R, R)]            GELU by table
    h2 = clamp(floor((a1 @ w2.T * m2 + c2) / 2**SHIFT), -R, R)      rescaled to the table index
    a2 = act[h2]
    l  = floor((a2 @ w3.T * m3 + c3) / 2**SHIFT)                    log2-probability, 1/64 bit
    l[c_s] += l[K + i]   for the i-th copy slot s, when c_s is inside  (grid3d: a copy bonus)
    f  = exp2[min(max(l) - l, D)]                                   2**(-d/64), a stored table
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from vtok.codec.context import LAYOUTS, copy_slots, slot_sizes
from vtok.codec.prior import PriorConfig, TokenPrior, add_copies
from vtok.files import atomic_write, atomic_write_text

FORMAT = "vtok-integer-prior"
FORMAT_VERSION = 1
R = 2048  # activation table index range [-R, R]
ACT_MAX = 2047  # activations are integers in [-ACT_MAX, ACT_MAX]
WEIGHT_MAX = 127  # weights are integers in [-127, 127] (per-row scales)
TABLE_BITS = 15  # the first layer's sums use 2**15 steps over the calibrated range
LOOKUP_SHIFT = TABLE_BITS - 11  # 2**15 steps -> 2**11 = R table steps
SHIFT = 24  # fixed-point multipliers carry 24 fractional bits
LOG_UNIT = 64  # logits in 1/64 bit
EXP_SPAN = 24 * LOG_UNIT  # probabilities below 2**-24 of the most likely one are floored
TOTAL_BITS = 24  # coding frequencies sum to exactly 2**24 (the range coder's precision)
MAX_CODEBOOK = 1 << 16
EXACT = 1 << 52  # float64 holds every integer below 2**53; stay a bit under it

_TENSORS = ("table", "bias1", "act", "w2", "m2", "c2", "w3", "m3", "c3", "exp2")


@dataclass
class IntegerPriorConfig:
    """What an integer prior models; `PriorConfig`'s fields that survive conversion."""

    codebook_size: int
    layout: str
    tokenizer_id: str
    slots: int
    hidden: int
    max_len: int = 1

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(map(repr, LAYOUTS))}, "
                             f"got {self.layout!r}")
        for name in ("codebook_size", "slots", "hidden", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not 2 <= self.codebook_size <= MAX_CODEBOOK:
            raise ValueError(f"a token prior codes 2 to {MAX_CODEBOOK} codes, "
                             f"got {self.codebook_size}")
        if self.layout != "sequence" and self.slots != len(self.slot_sizes):
            what = "neighbours" if self.layout == "grid" else "context slots"
            raise ValueError(f"a {self.layout} prior reads {len(self.slot_sizes)} {what}, "
                             f"got slots={self.slots}")
        if self.slots > 64 or self.hidden > 4096 or self.max_len > 1 << 20:
            raise ValueError(f"prior too large: {self.slots} slots, hidden {self.hidden}, "
                             f"max_len {self.max_len} (at most 64, 4096, 2**20)")

    @property
    def slot_sizes(self) -> list[int]:
        return slot_sizes(self.layout, self.codebook_size, self.slots)


class IntegerPrior:
    """Integer-only inference of a token prior: `frequencies(context)` gives, for each token,
    integer frequencies over the codebook that sum to 2**24."""

    def __init__(self, config: IntegerPriorConfig, tensors: dict[str, Tensor],
                 device: str | torch.device = "cpu") -> None:
        self.config = config
        self._check(tensors)
        self.tensors = {k: v.to(torch.int64) for k, v in tensors.items()}
        self.device = torch.device("cpu")
        self._id = _hash(config, self.tensors)
        self._copies = copy_slots(config.layout)
        sizes = config.slot_sizes
        self._offsets = torch.tensor([0, *sizes[:-1]]).cumsum(0)
        self.to(device)

    # -- identity and placement ----------------------------------------------------------
    @property
    def prior_id(self) -> str:
        """16 hex digits of sha256 over the shape of the model and every table (stored in
        .vtok headers)."""
        return self._id

    @property
    def slots(self) -> int:
        return self.config.slots

    def to(self, device: str | torch.device) -> IntegerPrior:
        self.device = torch.device(device)
        t = {k: v.to(self.device) for k, v in self.tensors.items()}
        self._table, self._bias1, self._act = t["table"], t["bias1"], t["act"]
        self._w2t, self._w3t = t["w2"].double().T.contiguous(), t["w3"].double().T.contiguous()
        self._m2, self._c2, self._m3, self._c3 = t["m2"], t["c2"], t["m3"], t["c3"]
        self._exp2 = t["exp2"].cpu().numpy()
        self._offsets = self._offsets.to(self.device)
        return self

    # -- inference -----------------------------------------------------------------------
    def logits(self, context: Tensor, positions: Tensor | None = None) -> Tensor:
        """`[M, slots]` context symbols (K = outside) -> `[M, K]` int64 log2-probabilities
        in 1/64 bit, up to a per-row constant."""
        c = self.config
        context = context.to(self.device, torch.int64)
        h = self._table[context + self._offsets].sum(1) + self._bias1
        if c.layout == "sequence":
            if positions is None:
                raise ValueError("a sequence prior needs the token positions")
            h = h + self._table[sum(c.slot_sizes) + positions.to(self.device)]
        a = self._act[torch.div(h, 1 << LOOKUP_SHIFT, rounding_mode="floor").clamp(-R, R) + R]
        h = _rescale(_matmul(a, self._w2t), self._m2, self._c2).clamp(-R, R)
        a = self._act[h + R + (2 * R + 1)]  # the second layer's table follows the first's
        out = _rescale(_matmul(a, self._w3t), self._m3, self._c3)
        return add_copies(out, context, self._copies, c.codebook_size)

    def frequencies(self, context: Tensor, positions: Tensor | None = None) -> np.ndarray:
        """`[M, K]` int64 coding frequencies: each >= 1, every row sums to 2**24."""
        logits = self.logits(context, positions).cpu().numpy()
        k = self.config.codebook_size
        d = np.minimum(logits.max(1, keepdims=True) - logits, EXP_SPAN)
        f = self._exp2[d]
        q = f * ((1 << TOTAL_BITS) - k) // f.sum(1, keepdims=True) + 1
        rows = np.arange(len(q))
        q[rows, q.argmax(1)] += (1 << TOTAL_BITS) - q.sum(1)
        return q

    def bits(self, context: Tensor, symbols: Tensor, positions: Tensor | None = None) -> float:
        """Ideal code length in bits of `symbols` [M] under the integer model."""
        q = self.frequencies(context, positions)
        p = q[np.arange(len(q)), symbols.cpu().numpy()] / float(1 << TOTAL_BITS)
        return float(-np.log2(p).sum())

    # -- files -----------------------------------------------------------------------------
    def save(self, directory: str | Path, stem: str = "prior", extra: dict | None = None) -> None:
        """Write `stem.safetensors` then `stem.json` (with `extra` facts, e.g. how it was
        fitted); each atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.cpu().to(_STORED[k]).contiguous() for k, v in self.tensors.items()}
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "prior_id": self.prior_id,
                **dataclasses.asdict(self.config), **(extra or {})}
        atomic_write(directory / f"{stem}.safetensors", lambda tmp: save_file(state, tmp))
        atomic_write_text(directory / f"{stem}.json", json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path, stem: str = "prior",
             device: str | torch.device = "cpu") -> IntegerPrior:
        """Read `stem.json` + `stem.safetensors`; any problem is a ValueError naming the
        folder (a float prior from an older vtok is refused with what to do)."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / f"{stem}.json").read_text())
            if not isinstance(meta, dict):
                raise ValueError("the JSON is not an object")
            if meta.get("format") != FORMAT:
                raise ValueError("not an integer prior (a float prior from an older vtok "
                                 "cannot code portable files; remake it with `vtok prior`)")
            if meta.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"prior format version {meta.get('format_version')!r} is not "
                                 f"supported (this vtok reads {FORMAT_VERSION})")
            names = {f.name for f in dataclasses.fields(IntegerPriorConfig)}
            config = IntegerPriorConfig(**{k: meta[k] for k in names if k in meta})
            prior = cls(config, load_file(directory / f"{stem}.safetensors"), device)
            if meta.get("prior_id") not in (None, prior.prior_id):
                raise ValueError(f"its tables hash to {prior.prior_id}, not the recorded "
                                 f"{meta['prior_id']}")
        except (OSError, json.JSONDecodeError, TypeError, KeyError, ValueError,
                RuntimeError, SafetensorError) as err:
            raise ValueError(f"{directory}: no readable token prior ({err})") from None
        return prior

    def _check(self, tensors: dict[str, Tensor]) -> None:
        """Refuse tables of the wrong shape or beyond the bounds that keep every intermediate
        exact (a hostile prior file must not produce inexact or unbounded arithmetic)."""
        c = self.config
        rows = sum(c.slot_sizes) + (c.max_len if c.layout == "sequence" else 0)
        out = c.codebook_size + len(copy_slots(c.layout))  # logits, then copy bonuses
        shapes = {"table": (rows, c.hidden), "bias1": (c.hidden,), "act": (2 * (2 * R + 1),),
                  "w2": (c.hidden, c.hidden), "m2": (c.hidden,), "c2": (c.hidden,),
                  "w3": (out, c.hidden), "m3": (out,), "c3": (out,), "exp2": (EXP_SPAN + 1,)}
        if set(tensors) != set(shapes):
            raise ValueError(f"prior tensors must be {sorted(shapes)}, got {sorted(tensors)}")
        for name, shape in shapes.items():
            t = tensors[name]
            if tuple(t.shape) != shape or t.is_floating_point() or t.dtype == torch.bool:
                raise ValueError(f"prior tensor {name} must be integer {shape}, "
                                 f"got {t.dtype} {tuple(t.shape)}")
        for name, limit in _BOUND.items():  # min and max: abs() of the most negative overflows
            t = tensors[name].to(torch.int64)
            if int(t.min()) < -limit or int(t.max()) > limit:
                raise ValueError(f"prior tensor {name} exceeds its bound {limit}")
        if int(tensors["exp2"].min()) < 1:
            raise ValueError("prior tensor exp2 must be >= 1")
        if c.hidden * ACT_MAX * WEIGHT_MAX * (1 << 30) >= 1 << 62:
            raise ValueError(f"hidden width {c.hidden} is too wide for exact arithmetic")


# the largest magnitude of each tensor: they keep every intermediate an exact integer (float64
# products below 2**52, int64 rescaling below 2**62) and fit the stored integer types
_BOUND = {"table": (1 << 31) - 1, "bias1": (1 << 31) - 1, "act": ACT_MAX, "w2": WEIGHT_MAX,
          "w3": WEIGHT_MAX, "m2": 1 << 30, "m3": 1 << 30, "c2": 1 << 60, "c3": 1 << 60,
          "exp2": 1 << TOTAL_BITS}
_STORED = {"table": torch.int32, "bias1": torch.int32, "act": torch.int16, "w2": torch.int8,
           "w3": torch.int8, "m2": torch.int64, "m3": torch.int64, "c2": torch.int64,
           "c3": torch.int64, "exp2": torch.int32}


def _matmul(a: Tensor, wt: Tensor) -> Tensor:
    """`a @ wt` of integers, exactly: every partial sum is below 2**52 (checked on load), so
    float64 represents each one and the order of summation cannot change the result."""
    return (a.double() @ wt).to(torch.int64)


def _rescale(acc: Tensor, m: Tensor, c: Tensor) -> Tensor:
    return torch.div(acc * m + c, 1 << SHIFT, rounding_mode="floor")


def _hash(config: IntegerPriorConfig, tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256(FORMAT.encode())
    # the probabilities, not which tokenizer they are bound to (a prior re-bound to a tokenizer
    # that tokenizes identically, after a decoder-only fine-tune, keeps its id)
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k != "tokenizer_id"}
    h.update(json.dumps(fields, sort_keys=True).encode())
    for name in _TENSORS:
        h.update(name.encode())
        h.update(tensors[name].cpu().to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# -- conversion from a trained float prior ------------------------------------------------------
def _first_layer(prior: TokenPrior) -> tuple[Tensor, Tensor]:
    """The first linear layer as per-(slot, symbol) and per-position tables (float64), and
    its bias: h1 = bias + sum of table rows."""
    c, linear = prior.config, prior.mlp[0]
    e = c.embed_dim
    weight = linear.weight.detach().double()
    sizes = slot_sizes(c.layout, c.codebook_size, c.context)
    embed = prior.embed.weight.detach().double().split(sizes)
    parts = [embed[s] @ weight[:, s * e : (s + 1) * e].T for s in range(prior.slots)]
    if prior.position is not None:
        pos = prior.position.weight.detach().double()
        parts.append(pos @ weight[:, prior.slots * e : (prior.slots + 1) * e].T)
    return torch.cat(parts), linear.bias.detach().double()


def _calibrate(prior: TokenPrior, tokens: Tensor, chunk: int = 64) -> tuple[float, float]:
    """The largest pre-activations of the two hidden layers over `tokens`' contexts (`chunk`
    token arrays at a time, so memory stays bounded)."""
    r1 = r2 = 0.0
    for part in tokens.split(chunk):
        ctx = prior.contexts(part).reshape(-1, prior.slots)
        positions = None
        if prior.position is not None:
            positions = torch.arange(part.shape[1]).expand(part.shape[0], -1).reshape(-1)
        with torch.no_grad():
            h1 = prior.mlp[0](prior.inputs(ctx, positions))
            h2 = prior.mlp[2](F.gelu(h1))
        r1, r2 = max(r1, float(h1.abs().max())), max(r2, float(h2.abs().max()))
    return r1, r2


def _weights(linear: torch.nn.Linear) -> tuple[Tensor, Tensor]:
    """Per-row symmetric int8 weights and their scales."""
    w = linear.weight.detach().double()
    scale = w.abs().amax(1).clamp_min(1e-12) / WEIGHT_MAX
    return torch.round(w / scale[:, None]).to(torch.int64), scale


def quantize_prior(prior: TokenPrior, calibration: Tensor) -> IntegerPrior:
    """Convert a trained float prior to integers; `calibration` ([N, *shape] tokens, those it
    was trained on) sets the hidden layers' ranges (values beyond them saturate)."""
    c: PriorConfig = prior.config
    r1, r2 = (max(r, 1e-3) * 1.1 for r in _calibrate(prior.eval(), calibration))
    table, bias = _first_layer(prior)
    s1 = r1 / (1 << TABLE_BITS)  # value of one step of h1
    # activation table: index i in [-R, R] stands for pre-activation i * r / R
    grid = torch.arange(-R, R + 1, dtype=torch.float64)
    g1, g2 = F.gelu(grid * r1 / R), F.gelu(grid * r2 / R)
    sa1, sa2 = g1.abs().max() / ACT_MAX, g2.abs().max() / ACT_MAX
    act = torch.cat([torch.round(g1 / sa1), torch.round(g2 / sa2)]).to(torch.int64)
    w2, sw2 = _weights(prior.mlp[2])
    w3, sw3 = _weights(prior.mlp[4])
    one = float(1 << SHIFT)
    m2 = torch.round(sw2 * sa1 / (r2 / R) * one)
    c2 = torch.round(prior.mlp[2].bias.detach().double() / (r2 / R) * one) + one / 2
    to_log = LOG_UNIT / math.log(2)  # nats -> 1/64 bit
    m3 = torch.round(sw3 * sa2 * to_log * one)
    c3 = torch.round(prior.mlp[4].bias.detach().double() * to_log * one) + one / 2
    exp2 = torch.round(2.0 ** (TOTAL_BITS - torch.arange(EXP_SPAN + 1, dtype=torch.float64)
                               / LOG_UNIT)).clamp_min(1)
    tensors = {"table": torch.round(table / s1), "bias1": torch.round(bias / s1), "act": act,
               "w2": w2, "m2": m2, "c2": c2, "w3": w3, "m3": m3, "c3": c3, "exp2": exp2}
    tensors = {k: v.to(torch.int64) for k, v in tensors.items()}
    config = IntegerPriorConfig(c.codebook_size, c.layout, c.tokenizer_id, prior.slots,
                                c.hidden, c.max_len)
    return IntegerPrior(config, tensors)
