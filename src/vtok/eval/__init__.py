"""Measurement with pinned definitions: PSNR, SSIM, LPIPS, flicker, bits per pixel; and the
harnesses built on them: the demo (`demo`, `report`), classic image and video codecs (`codecs`,
`video_codecs`), the token-reduction bench (`reduce_bench`, its fidelity scores in
`reduce_fidelity`, its table and plot in `reduce_report`) and `vtok eval` (`compare` runs it
over `methods` with `scoring`, once `compare_inputs` has checked and loaded everything;
`bdrate`, `features`, `robustness` and `text_fidelity` are its measures, `compare_report` its
outputs)."""

from vtok.eval.metrics import flicker, ms_ssim, psnr, raw_bits, ssim, to_uint8

__all__ = ["flicker", "ms_ssim", "psnr", "raw_bits", "ssim", "to_uint8"]
