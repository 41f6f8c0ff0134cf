"""Coding a clip with a classic video codec through PyAV (FFmpeg), or with a video tokenizer
through a real .vtok file, and scoring what comes back frame by frame.

Classic codecs: H.264 (libx264), H.265 (libx265) and AV1 (libsvtav1, decoded by whichever AV1
decoder FFmpeg picks, dav1d in PyAV's wheels), each written as an MP4 file in memory at a
constant rate factor (CRF), with the encoder's preset fixed in `CODECS` and its default GOP;
x265 runs with `info=0`, which drops the SEI message holding its options as about 2 KB of
text (x264's, about 0.6 KB, has no switch and is counted).
Frames go in as 8-bit RGB, are converted to YUV 4:2:0 (8-bit, FFmpeg's default BT.601 matrix)
for the encoder and come back as 8-bit RGB, so colour conversion and chroma subsampling are
part of each codec's loss; 4:2:0 needs even sides. `Coded.data` is the whole MP4 file (headers
and index included), as a .vtok file's bytes are for the tokenizer.

Scores (`frame_scores`) follow `vtok.eval.metrics`: PSNR and SSIM on 8-bit RGB and LPIPS per
frame, and flicker per frame transition.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import torch

from vtok.eval.metrics import flicker, psnr, ssim, to_uint8

CONTAINER = "mp4"
PIXEL_FORMAT = "yuv420p"


@dataclass(frozen=True)
class VideoCodec:
    """An FFmpeg encoder at fixed settings; `crf_range` is its CRF scale (higher: fewer
    bits), `start` and `step` where a rate search begins and how far it moves per try."""

    label: str
    encoder: str
    crf_range: tuple[int, int]
    start: int
    step: int
    options: dict[str, str] = field(default_factory=dict)


CODECS = {
    "h264": VideoCodec("H.264", "libx264", (0, 51), 28, 6, {"preset": "medium"}),
    "h265": VideoCodec("H.265", "libx265", (0, 51), 30, 6,
                       {"preset": "medium", "x265-params": "log-level=error:info=0"}),
    "av1": VideoCodec("AV1", "libsvtav1", (1, 63), 40, 8, {"preset": "8"}),
}


@dataclass
class Coded:
    """A coded clip: the file's bytes, the decoded frames (uint8 `[T, H, W, 3]`) and the
    seconds spent encoding (from RGB frames to file bytes) and decoding (back to RGB)."""

    data: bytes
    frames: np.ndarray
    encode_seconds: float
    decode_seconds: float
    decoder: str = ""

    def bpp(self) -> float:
        """Bits per pixel per frame: file bits / (frames x height x width)."""
        t, h, w = self.frames.shape[:3]
        return len(self.data) * 8 / (t * h * w)


def available(name: str) -> bool:
    """Whether codec `name` (a key of `CODECS`) can encode with the installed PyAV."""
    import av

    return name in CODECS and CODECS[name].encoder in av.codecs_available


def check_codec(name: str) -> VideoCodec:
    """The codec named `name`; ValueError naming the known codecs, or saying that this PyAV
    build lacks its encoder."""
    if name not in CODECS:
        raise ValueError(f"unknown video codec {name!r} (known: {', '.join(CODECS)})")
    if not available(name):
        raise ValueError(f"video codec {name!r} needs FFmpeg's {CODECS[name].encoder} encoder, "
                         f"which this PyAV build does not have")
    return CODECS[name]


def as_uint8(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 `[T, H, W, 3]` from itself or from a float clip `[T, 3, H, W]` in [0, 1]."""
    if isinstance(frames, torch.Tensor):
        if frames.ndim != 4 or frames.shape[1] != 3 or not frames.is_floating_point():
            raise ValueError(f"a clip tensor must be float [T, 3, H, W] in [0, 1], got "
                             f"{frames.dtype} {tuple(frames.shape)}")
        return to_uint8(frames.cpu()).permute(0, 2, 3, 1).contiguous().numpy()
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"clip frames must be uint8 [T, H, W, 3], got {frames.dtype} "
                         f"{frames.shape}")
    return np.ascontiguousarray(frames)


def as_float(frames: np.ndarray) -> torch.Tensor:
    """uint8 `[T, H, W, 3]` -> float `[T, 3, H, W]` in [0, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255


def code_clip(frames: np.ndarray | torch.Tensor, codec: str, crf: int,
              fps: Fraction | int = 25, threads: int = 2) -> Coded:
    """Encode `frames` with `codec` (a key of `CODECS`) at `crf` into an MP4 file in memory,
    then decode it back; `threads` for the encoder and the decoder."""
    import av

    spec = check_codec(codec)
    lo, hi = spec.crf_range
    if isinstance(crf, bool) or not isinstance(crf, int) or not lo <= crf <= hi:
        raise ValueError(f"{codec} takes a CRF in [{lo}, {hi}], got {crf!r}")
    pixels = as_uint8(frames)
    t, h, w = pixels.shape[:3]
    if h % 2 or w % 2:
        raise ValueError(f"{w}x{h} frames: 4:2:0 video needs even width and height; crop first")
    # SVT-AV1 prints a banner per encoder unless its log level (read from this variable) is
    # lowered; a value the user set is kept
    os.environ.setdefault("SVT_LOG", "1")
    options = dict(spec.options, crf=str(crf))
    if spec.encoder == "libx265":  # x265 sizes its own thread pool; thread_count is ignored
        options["x265-params"] = f"{options.get('x265-params', '')}:pools={threads}".lstrip(":")
    buffer = io.BytesIO()
    start = time.perf_counter()
    with av.open(buffer, "w", format=CONTAINER) as container:
        stream = container.add_stream(spec.encoder, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, PIXEL_FORMAT
        stream.codec_context.thread_count = threads
        stream.options = options
        for i, image in enumerate(pixels):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    encode_seconds = time.perf_counter() - start
    data = buffer.getvalue()
    start = time.perf_counter()
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = threads
        stream.thread_type = "AUTO"
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        decoder = stream.codec_context.name
    decode_seconds = time.perf_counter() - start
    if len(decoded) != t:
        raise RuntimeError(f"{codec} at CRF {crf}: {t} frames encoded, {len(decoded)} decoded")
    return Coded(data, np.stack(decoded), encode_seconds, decode_seconds, decoder)


def code_with_tokenizer(tok, frames: np.ndarray | torch.Tensor, coder,
                        fps: Fraction | int = 25) -> Coded:
    """Code `frames` with a video tokenizer through the bytes of a real .vtok file written by
    `coder` (`vtok.codec.tokens_file.make_coder`), on the tokenizer's device. Encoding times
    the tokenizer and the file's bytes, decoding the parsing, the tokens' decoding and the
    tokenizer; both include moving frames to and from 8-bit RGB, as a codec's do."""
    from vtok.codec.container import VtokFile
    from vtok.codec.tokens_file import from_vtok, to_vtok

    if not tok.codes_clips:
        raise ValueError(f"a {tok.architecture} tokenizer codes still images, not clips")
    pixels = as_uint8(frames)
    rate = Fraction(fps).limit_denominator(1 << 20)
    device = next(tok.parameters()).device
    start = time.perf_counter()
    tokens = tok.encode(as_float(pixels).to(device)[None])
    tokens.fps = (rate.numerator, rate.denominator)
    data = to_vtok([tokens], tok.codebook_size, coder).to_bytes()
    encode_seconds = _synced(device, start)
    start = time.perf_counter()
    (back,) = from_vtok(VtokFile.from_bytes(data), coder, tok.tokenizer_id)
    decoded = as_uint8(tok.decode(back)[0])
    decode_seconds = _synced(device, start)
    return Coded(data, decoded, encode_seconds, decode_seconds, "vtok")


def _synced(device: torch.device, start: float) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def frame_scores(source: np.ndarray, decoded: np.ndarray, lpips,
                 batch: int = 8) -> dict[str, np.ndarray]:
    """Per frame: "psnr", "ssim", "lpips_alex" (`lpips`: a `vtok.losses.LPIPS`, run on its
    own device in batches of `batch` frames); per transition: "flicker" (empty for one
    frame). Inputs uint8 `[T, H, W, 3]` of equal shapes."""
    if source.shape != decoded.shape:
        raise ValueError(f"source and decoded clips differ in shape: {source.shape} and "
                         f"{decoded.shape}")
    a, b = as_float(source), as_float(decoded)
    device = next(lpips.parameters()).device
    with torch.no_grad():
        lp = torch.cat([lpips(x.to(device), y.to(device)).cpu()
                        for x, y in zip(a.split(batch), b.split(batch))])
    return {"psnr": psnr(a, b).numpy(), "ssim": ssim(a, b).numpy(),
            "lpips_alex": lp.double().numpy(),
            "flicker": flicker(a, b).numpy() if len(a) > 1 else np.zeros(0)}


def bracket_crfs(rate_at: Callable[[int], float], low: float, high: float, codec: str,
                 points: int = 4) -> dict[int, float]:
    """CRFs of `codec` whose rates (from `rate_at(crf)`, which codes at that CRF and returns
    bits per pixel) bracket [low, high]: one at or below `low`, one at or above `high`, as far
    as the codec's CRF range reaches. From `VideoCodec.start` it steps by `step` towards fewer
    bits until a rate is <= `low`, then towards more until one is >= `high`; then, until
    there are `points` CRFs, it codes the middle of the widest gap between tried CRFs (or one
    step past the ends when no gap is left). Returns {crf: rate} in CRF order; check the ends
    to see whether the range was wide enough."""
    spec = CODECS[codec]
    lo, hi = spec.crf_range
    rates: dict[int, float] = {}

    def at(crf: int) -> None:
        if crf not in rates:
            rates[crf] = rate_at(crf)

    at(min(max(spec.start, lo), hi))
    while min(rates.values()) > low and max(rates) < hi:
        at(min(max(rates) + spec.step, hi))
    while max(rates.values()) < high and min(rates) > lo:
        at(max(min(rates) - spec.step, lo))
    while len(rates) < min(points, hi - lo + 1):
        tried = sorted(rates)
        gap, left = max([(b - a, a) for a, b in zip(tried, tried[1:])], default=(0, lo))
        if gap > 1:
            at(left + gap // 2)
        elif tried[-1] < hi:
            at(min(tried[-1] + spec.step, hi))
        else:
            at(max(tried[0] - spec.step, lo))
    return dict(sorted(rates.items()))



def closest_crf(rate_at: Callable[[int], float], target: float, codec: str) -> int:
    """The CRF of `codec` whose rate (`rate_at(crf)`, bits per pixel) is closest to `target`
    in ratio: `bracket_crfs` finds CRFs on both sides of it, then the CRFs between the two
    nearest ones are bisected (rates fall as the CRF grows) until they are neighbours. At the
    end of the CRF range when the range does not reach `target`."""
    rates = bracket_crfs(rate_at, target, target, codec, points=2)
    while True:
        more = [crf for crf, rate in rates.items() if rate >= target]
        fewer = [crf for crf, rate in rates.items() if rate <= target]
        if not more or not fewer or min(fewer) - max(more) <= 1:
            break
        middle = (max(more) + min(fewer)) // 2
        rates[middle] = rate_at(middle)
    return min(rates, key=lambda crf: abs(np.log(rates[crf] / target)))
