"""Text fidelity in the manner of TokBench (Wu et al. 2025, "TokBench: Evaluating Your Visual
Tokenizer before Visual Generation"): can small text still be read after coding?

Words are rendered at several pixel sizes (cap-to-descender height is about the font size)
onto real photos, each on a translucent white plate (as captions and signs are) so that the
original is readable; then every word's box is cut from the original and from the
reconstruction and read by an offline OCR recognizer (PP-OCRv4's recognition model in
`rapidocr-onnxruntime`, run on the known box: no detection step). Per size bin:

- accuracy: the share of words read exactly (case-insensitive, spaces ignored) in the
  reconstruction, counted only over words the OCR reads exactly in the original;
- NED: the mean normalized edit distance (Levenshtein / longer length) between the truth and
  the reconstruction's reading, over the same words.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from vtok.eval.metrics import to_uint8

SIZES = (8, 12, 16, 24, 32, 48, 64)
OCR_PACKAGE = "rapidocr-onnxruntime==1.4.4"
WORDS = ("river", "stone", "garden", "yellow", "market", "window", "silver", "orange", "castle",
         "forest", "planet", "winter", "bridge", "candle", "pocket", "harbour", "violet",
         "basket", "mirror", "ladder", "pepper", "rocket", "school", "summer", "tunnel", "valley",
         "wonder", "zebra", "anchor", "butter", "circle", "dinner", "engine", "falcon", "ginger",
         "honey", "island", "jacket", "kettle", "lemon", "marble", "needle", "oyster", "parrot",
         "quartz", "rabbit", "saddle", "ticket", "unicorn", "velvet", "walnut", "cradle",
         "meadow", "Paris", "London", "Berlin", "Oslo", "Cairo", "Lima", "Quebec", "Dublin",
         "Vienna", "Tokyo")


@dataclass(frozen=True)
class Word:
    text: str
    size: int
    box: tuple[int, int, int, int]  # left, top, right, bottom of the cut the OCR reads


@dataclass
class TextImage:
    """A photo with words of one size drawn on it."""

    pixels: torch.Tensor  # [3, H, W] in [0, 1]
    size: int
    words: list[Word]
    readable: list[bool] = field(default_factory=list)  # the OCR reads it in the original


@lru_cache(maxsize=16)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans at `size` pixels: matplotlib's copy, the system's, else Pillow's own
    scalable default font."""
    candidates = [Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")]
    try:
        import matplotlib

        candidates.insert(0, Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf")
    except ImportError:
        pass
    for path in candidates:
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


def render(photo: torch.Tensor, size: int, rng: random.Random, max_words: int) -> TextImage:
    """`photo` ([3, H, W] in [0, 1]) with up to `max_words` words of `size` pixels, in rows
    from the top left; none when no word fits the width."""
    im = Image.fromarray(to_uint8(photo).permute(1, 2, 0).contiguous().numpy())
    width, height = im.size
    draw = ImageDraw.Draw(im, "RGBA")
    face = font(size)
    margin = max(2, size // 4)
    words: list[Word] = []
    y = margin
    while len(words) < max_words:
        x, row_bottom = margin, None
        for _ in range(len(WORDS)):  # a row: words until the next one would not fit
            text = rng.choice(WORDS)
            left, top, right, bottom = draw.textbbox((x, y), text, font=face)
            box = (left - margin, top - margin, right + margin, bottom + margin)
            if box[2] > width and row_bottom is None and box[3] <= height:
                continue  # too wide to start a row: try a shorter word
            if box[2] > width or box[3] > height or len(words) == max_words:
                break
            plate = (left - margin // 2, top - margin // 2, right + margin // 2,
                     bottom + margin // 2)
            draw.rectangle(plate, fill=(255, 255, 255, 200))
            draw.text((x, y), text, font=face, fill=(0, 0, 0))
            words.append(Word(text, size, (max(0, box[0]), max(0, box[1]), box[2], box[3])))
            x, row_bottom = right + size, bottom
        if row_bottom is None:
            break
        y = row_bottom + 2 * margin
    pixels = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float()
    return TextImage(pixels / 255, size, words)


def text_images(photos: Sequence[torch.Tensor], sizes: Sequence[int] = SIZES, seed: int = 0,
                max_words: int = 8) -> list[TextImage]:
    """One text image per photo and size (the same words for every method compared)."""
    rng = random.Random(seed)
    return [render(photo, size, rng, max_words) for photo in photos for size in sizes]


class WordReader:
    """Reads one line of text from an image crop with PP-OCRv4's recognizer (offline)."""

    def __init__(self) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as err:
            raise ImportError(f"text fidelity needs the offline OCR {OCR_PACKAGE} "
                              f"(pip install 'vtok[eval]'): {err}") from None
        self.engine = RapidOCR()

    def read(self, image: torch.Tensor, boxes: Sequence[tuple[int, int, int, int]]) -> list[str]:
        """The text read in each box of `image` ([3, H, W] in [0, 1])."""
        rgb = to_uint8(image).permute(1, 2, 0).contiguous().numpy()
        out = []
        for left, top, right, bottom in boxes:
            crop = np.ascontiguousarray(rgb[top:bottom, left:right, ::-1])  # BGR, as cv2 reads
            (text, _score), = self.engine.text_rec([crop])[0]
            out.append(text)
        return out


def canonical(text: str) -> str:
    return "".join(text.split()).lower()


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions each cost 1)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def normalized_edit_distance(truth: str, read: str) -> float:
    a, b = canonical(truth), canonical(read)
    return edit_distance(a, b) / max(len(a), len(b), 1)


def mark_readable(images: Sequence[TextImage], reader: WordReader) -> None:
    """Which words the OCR reads exactly in the originals (only those are scored)."""
    for item in images:
        read = reader.read(item.pixels, [w.box for w in item.words])
        item.readable = [canonical(r) == canonical(w.text) for r, w in zip(read, item.words)]


class TextScore:
    """Per size bin: words scored, words read exactly, summed NED."""

    def __init__(self) -> None:
        self.bins: dict[int, list[float]] = {}

    def add(self, item: TextImage, reconstruction: torch.Tensor, reader: WordReader) -> None:
        words = [w for w, ok in zip(item.words, item.readable) if ok]
        counts = self.bins.setdefault(item.size, [0, 0, 0.0])
        for word, read in zip(words, reader.read(reconstruction, [w.box for w in words])):
            counts[0] += 1
            counts[1] += canonical(read) == canonical(word.text)
            counts[2] += normalized_edit_distance(word.text, read)

    def to_dict(self) -> dict[str, dict[str, float | int | None]]:
        return {str(size): {"words": int(n), "accuracy": correct / n if n else None,
                            "ned": ned / n if n else None}
                for size, (n, correct, ned) in sorted(self.bins.items())}
