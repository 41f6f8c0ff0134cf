"""Run logs: a CSV of metrics, TensorBoard scalars when tensorboard is installed, image grids."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vtok.files import atomic_write, atomic_write_text


class RunLog:
    """Appends rows to `log.csv` (columns fixed by the first row) and mirrors to TensorBoard.

    `start`: the step a run continues from. Rows logged after it (by an interrupted run that
    is now resumed from an earlier checkpoint) are dropped, so each step appears once; 0 starts
    a fresh log. None keeps every row.
    """

    def __init__(self, run_dir: Path, start: int | None = None) -> None:
        self.path = run_dir / "log.csv"
        self.columns: list[str] | None = None
        if start is not None:
            self._keep_until(start)
        if self.path.exists():
            with open(self.path, newline="") as f:
                self.columns = next(csv.reader(f), None)
        try:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: TensorBoard hides the interrupted run's events after `start` too
            self.tb = SummaryWriter(str(run_dir / "tensorboard"),
                                    purge_step=None if start is None else start + 1)
        except ImportError:  # tensorboard is optional
            self.tb = None

    def _keep_until(self, start: int) -> None:
        """Rewrite the log (atomically) without the rows after step `start`, and without a
        row cut short by a killed process."""
        if not self.path.exists():
            return
        with open(self.path, newline="") as f:
            rows = list(csv.reader(f))
        header = rows[0] if rows else []
        kept = [r for r in rows[1:] if len(r) == len(header) and r[0].isdigit()
                and int(r[0]) <= start]
        if start == 0 or not header or header[0] != "step":
            self.path.unlink()
            return
        buffer = io.StringIO()
        csv.writer(buffer).writerows([header, *kept])
        atomic_write_text(self.path, buffer.getvalue())

    def write(self, step: int, values: dict[str, float]) -> None:
        row = {"step": step, **values}
        if self.columns is None:
            self.columns = list(row)
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self.columns)
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(c, "")) for c in self.columns])
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def save_grid(path: Path, originals: torch.Tensor, recons: torch.Tensor, count: int = 8) -> None:
    """Originals on the top row, reconstructions below, written atomically as PNG. Of clips
    `[B, T, 3, H, W]`, the first clip's frames."""
    if originals.ndim == 5:
        originals, recons = originals[0], recons[0]
    n = min(count, originals.shape[0])
    rows = [torch.cat(list(t[:n].detach().float().clamp(0, 1).cpu()), dim=2)
            for t in (originals, recons)]
    grid = torch.cat(rows, dim=1)
    pixels = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, Image.fromarray(pixels).save)
