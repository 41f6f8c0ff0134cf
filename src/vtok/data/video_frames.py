"""PyAV video frames as float RGB tensors, as displayed: the pixel formats and the display
matrix. `frame_to_tensor` is the one place where a decoded frame becomes pixels.

- 8-bit formats are read through 8-bit RGB(A), deeper ones through 16-bit RGB(A), so 8-bit
  values come back exact (v / 255) and deeper samples keep their precision;
- grey keeps its range (v / (2**bits - 1)) and becomes three equal channels;
- alpha is composited on white, as `vtok.data.images` does;
- YUV flagged full range is read as full range, unflagged YUV as limited (FFmpeg's rule);
- the display matrix (rotation by quarter turns, left-right mirror) is applied.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from vtok.data.images import _composite


def frame_to_tensor(frame) -> torch.Tensor:
    """A PyAV `VideoFrame` as float `[3, H, W]` in [0, 1], as displayed (see the module)."""
    fmt = frame.format
    bits = max(c.bits for c in fmt.components)
    has_alpha = any(c.is_alpha for c in fmt.components)
    if fmt.name.startswith("gray") and not fmt.name.startswith("grayf"):
        grey = frame.to_ndarray().astype(np.float32) / float((1 << bits) - 1)
        pixels = torch.from_numpy(grey).clamp_(0, 1).expand(3, -1, -1).contiguous()
    else:
        target = ("rgba" if has_alpha else "rgb24") if bits <= 8 else (
            "rgba64le" if has_alpha else "rgb48le")
        # YUV flagged full range must be read as such; unflagged means limited (FFmpeg's rule)
        kwargs = {"src_color_range": frame.color_range} if frame.color_range else {}
        values = frame.to_ndarray(format=target, **kwargs)
        scale = 255.0 if bits <= 8 else 65535.0
        pixels = torch.from_numpy(values.astype(np.float32) / scale).permute(2, 0, 1)
        if has_alpha:
            pixels = _composite(pixels[:3], pixels[3:], premultiplied=False)
        else:
            pixels = pixels.contiguous()
    rotation, mirrored = frame_orientation(frame)
    return orient(pixels, rotation, mirrored)


def frame_orientation(frame) -> tuple[int, bool]:
    """(degrees counter-clockwise, mirrored) that display a stored frame, from its display
    matrix; a rotation off the quarter turns is rounded to the nearest one."""
    for side_data in frame.side_data:
        if side_data.type.name == "DISPLAYMATRIX":
            return matrix_orientation(np.frombuffer(bytes(side_data), dtype=np.int32)[:9])
    return 0, False


def matrix_orientation(matrix) -> tuple[int, bool]:
    """FFmpeg's display matrix (9 int32, 16.16 fixed point) maps a stored pixel (x, y), y down,
    to x' = a*x + c*y, y' = b*x + d*y with [a, b, _, c, d, ...] = matrix. Written as a rotation
    followed by an optional left-right mirror (negating x'), returned as (degrees
    counter-clockwise in {0, 90, 180, 270}, mirrored)."""
    a, b, c, d = (float(matrix[i]) for i in (0, 1, 3, 4))
    mirrored = a * d - b * c < 0
    if mirrored:  # undo the mirror: what is left is a pure rotation
        a, c = -a, -c
    if a == 0 and b == 0:
        return 0, mirrored
    # a counter-clockwise turn by t (y down) sends (1, 0) to (cos t, -sin t)
    degrees = math.degrees(math.atan2(-b, a))
    return int(round(degrees / 90)) % 4 * 90, mirrored


def orient(pixels: torch.Tensor, rotation: int, mirrored: bool) -> torch.Tensor:
    """`[C, H, W]` turned `rotation` degrees counter-clockwise, then mirrored left-right."""
    turns = (rotation // 90) % 4
    if turns:
        pixels = torch.rot90(pixels, turns, dims=(-2, -1)).contiguous()
    return pixels.flip(-1) if mirrored else pixels
