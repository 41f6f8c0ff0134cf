"""Measurement with pinned definitions: PSNR, LPIPS, bits per pixel; and the harnesses built on
them: the demo (`demo`, `report`) and the token-reduction bench (`reduce_bench`, its fidelity
scores in `reduce_fidelity`, its table and plot in `reduce_report`)."""

from vtok.eval.metrics import psnr, raw_bits, to_uint8

__all__ = ["psnr", "raw_bits", "to_uint8"]
