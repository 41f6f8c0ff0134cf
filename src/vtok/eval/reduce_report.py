"""The reduction bench's printed table and its speed-up plot (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vtok.files import atomic_write

LABELS = {"psnr": "PSNR", "lpips_alex": "LPIPS", "agreement_center": "agree-ctr",
          "agreement_random": "agree-rnd"}


def _cell(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(summary: dict[str, Any]) -> str:
    """Fixed-width text: one line per row of `summary["rows"]`, then the notes."""
    sizes, columns = summary["batch_sizes"], summary["fidelity_columns"]
    width = max([10] + [len(row["method"]) for row in summary["rows"]])
    head = [f"{'method':{width}s}", f"{'keep':>5s}", f"{'tokens':>6s}", f"{'GFLOPs':>7s}"]
    head += [f"{f'img/s b{b}':>10s}" for b in sizes]
    head += [f"{f'speed-up b{b} (quartiles)':>25s}" for b in sizes]
    head += [f"{LABELS.get(c, c):>9s}" for c in columns]
    lines = [" ".join(head)]
    for row in summary["rows"]:
        cells = [f"{row['method']:{width}s}", f"{row['keep']:5.2f}",
                 f"{_cell(row['tokens'], 'd'):>6s}", f"{_cell(row['gflops'], '.3f'):>7s}"]
        cells += [f"{_cell(row[f'images_per_s_b{b}'], '.1f'):>10s}" for b in sizes]
        cells += [f"{_speedup(row, b):>25s}" for b in sizes]
        cells += [f"{_cell(row[c], '.3f'):>9s}" for c in columns]
        line = " ".join(cells)
        if row.get("error"):
            line += f"  (skipped: {row['error']})"
        lines.append(line)
    if summary.get("fidelity_note"):
        lines.append(f"note: {summary['fidelity_note']}")
    return "\n".join(lines)


def _speedup(row: dict, b: int) -> str:
    median, quartiles = row[f"speedup_b{b}"], row.get(f"speedup_quartiles_b{b}")
    if median is None or not quartiles:
        return _cell(median, ".2f")
    return f"{median:.2f} ({quartiles[0]:.2f}-{quartiles[1]:.2f})"


def plot(summary: dict[str, Any], path: Path) -> None:
    """Speed-up at the largest batch size against fidelity (the random-crop agreement when
    there is one: it has the most images; else the first fidelity column; keep when there is
    none), one line per method, each with its own colour and marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = max(summary["batch_sizes"])
    scored = [c for c in summary["fidelity_columns"]
              if any(r[c] is not None for r in summary["rows"])]
    x_key = "agreement_random" if "agreement_random" in scored else (
        scored[0] if scored else "keep")
    rows = [r for r in summary["rows"] if r[f"speedup_b{b}"] is not None and r[x_key] is not None]
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    colours = plt.get_cmap("tab20").colors
    for i, method in enumerate(dict.fromkeys(r["method"] for r in rows)):
        own = sorted((r for r in rows if r["method"] == method), key=lambda r: r["keep"])
        style = dict(color="k", marker="*", linestyle="none") if method == "none" else dict(
            color=colours[(2 * i) % 20 + (i // 10) % 2], marker="os^vDP"[i % 6])
        ax.plot([r[x_key] for r in own], [r[f"speedup_b{b}"] for r in own], **style,
                label="unreduced" if method == "none" else method)
    ax.set_xlabel(LABELS.get(x_key, x_key) if x_key != "keep" else "keep ratio")
    ax.set_ylabel(f"speed-up over unreduced (batch {b})")
    ax.set_title(summary["subject"]["name"], fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp))
    plt.close(fig)
