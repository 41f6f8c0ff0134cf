"""Measurement with pinned definitions: PSNR, LPIPS, bits per pixel."""

from vtok.eval.metrics import psnr, raw_bits, to_uint8

__all__ = ["psnr", "raw_bits", "to_uint8"]
