"""Bjøntegaard deltas between two rate-quality curves (Bjøntegaard 2001, VCEG-M33).

Each curve is fitted with the standard polynomial of degree 3 (fewer for fewer points: one less
than the number of points), the rate as natural log, and the two fits are integrated over the
range both curves cover:

- BD-rate: log-rate as a polynomial of quality, averaged over the common quality range; the
  mean log difference, as a percentage (`exp(mean) - 1`) x 100. Negative: `test` spends fewer
  bits than `anchor` for the same quality.
- BD-quality (BD-PSNR, BD-LPIPS, ...): quality as a polynomial of log-rate, averaged over the
  common log-rate range; `test` minus `anchor` in the metric's units (for LPIPS, negative is
  better).

There is no delta without an overlap: the result then says so (`value` None) instead of
extrapolating a fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Delta:
    """A Bjøntegaard delta: `value` (None without overlap), the common range it was averaged
    over (quality for BD-rate, bpp for BD-quality), and a note saying why when it is None."""

    value: float | None
    low: float | None = None
    high: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, float | str | None]:
        return {"value": self.value, "low": self.low, "high": self.high, "note": self.note}


def _curve(rates: Sequence[float], quality: Sequence[float], name: str
           ) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rates, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if r.shape != q.shape or r.ndim != 1:
        raise ValueError(f"{name}: rates and quality need one value each per point, got "
                         f"{r.shape} and {q.shape}")
    if len(r) < 2:
        raise ValueError(f"{name}: a Bjøntegaard delta needs at least 2 rate points, got {len(r)}")
    if not (np.isfinite(r).all() and np.isfinite(q).all()) or (r <= 0).any():
        raise ValueError(f"{name}: rates must be positive and every value finite")
    return np.log(r), q


def _mean_over(coeffs: np.ndarray, low: float, high: float) -> float:
    antiderivative = np.polyint(coeffs)
    return float((np.polyval(antiderivative, high) - np.polyval(antiderivative, low))
                 / (high - low))


def _fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    distinct = len(np.unique(x))
    if distinct < 2:
        raise ValueError("a Bjøntegaard fit needs at least 2 distinct points")
    return np.polyfit(x, y, min(3, distinct - 1))


def bd_rate(anchor_rates: Sequence[float], anchor_quality: Sequence[float],
            test_rates: Sequence[float], test_quality: Sequence[float]) -> Delta:
    """Average rate difference (%) of `test` against `anchor` at equal quality."""
    la, qa = _curve(anchor_rates, anchor_quality, "anchor")
    lt, qt = _curve(test_rates, test_quality, "test")
    low, high = max(qa.min(), qt.min()), min(qa.max(), qt.max())
    if low >= high:
        return Delta(None, note=f"no overlap in quality: anchor {qa.min():.4g}..{qa.max():.4g}, "
                                f"test {qt.min():.4g}..{qt.max():.4g}")
    diff = _mean_over(_fit(qt, lt), low, high) - _mean_over(_fit(qa, la), low, high)
    return Delta((np.exp(diff) - 1) * 100, float(low), float(high))


def bd_quality(anchor_rates: Sequence[float], anchor_quality: Sequence[float],
               test_rates: Sequence[float], test_quality: Sequence[float]) -> Delta:
    """Average quality difference (test - anchor) at equal rate; the range is in rate units."""
    la, qa = _curve(anchor_rates, anchor_quality, "anchor")
    lt, qt = _curve(test_rates, test_quality, "test")
    low, high = max(la.min(), lt.min()), min(la.max(), lt.max())
    if low >= high:
        return Delta(None, note=f"no overlap in rate: anchor {np.exp(la.min()):.4g}.."
                                f"{np.exp(la.max()):.4g} bpp, test {np.exp(lt.min()):.4g}.."
                                f"{np.exp(lt.max()):.4g} bpp")
    diff = _mean_over(_fit(lt, qt), low, high) - _mean_over(_fit(la, qa), low, high)
    return Delta(diff, float(np.exp(low)), float(np.exp(high)))


def bd_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """BD-rate / BD-quality (LPIPS-Alex, PSNR) against AVIF of every tokenizer in `rows`
    (`vtok eval`'s results rows) with 2+ rate points; a note instead where there is no curve."""
    anchor = [r for r in rows if r["method"] == "AVIF"]
    out = []
    for method in dict.fromkeys(r["method"] for r in rows if r["kind"] == "tokenizer"):
        test = [r for r in rows if r["method"] == method]
        entry: dict[str, Any] = {"tokenizer": method, "anchor": "AVIF"}
        if len(test) < 2 or len(anchor) < 2:
            entry["note"] = ("a single rate point: no curve" if len(test) < 2 else
                             "AVIF was not measured")
            out.append(entry)
            continue
        for metric in ("lpips_alex", "psnr"):
            args = ([r["bpp"] for r in anchor], [r[metric] for r in anchor],
                    [r["bpp"] for r in test], [r[metric] for r in test])
            entry[f"bd_rate_{metric}"] = bd_rate(*args).to_dict()
            entry[f"bd_{metric}"] = bd_quality(*args).to_dict()
        out.append(entry)
    return out
