"""Finding text in pixels, offline: one small interface, and the engine behind it.

The check after Clean Pixel Data (PS3.15 E.3.1) asks one question of an image: where is there text? A
``TextFinder`` answers it with boxes; ``deid.pixels`` decides what the boxes mean. The engine shipped is
RapidOCR on ONNX Runtime (``rapidocr-onnxruntime``, the ``ocr`` extra): PaddleOCR's PP-OCRv4 detection and
recognition models inside the wheel, so nothing is downloaded at run time, and a detector that finds text
on the noisy, low-contrast backgrounds of ultrasound where Tesseract's page layout analysis finds none.
It is imported when first used: a process that never checks pixels never loads it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# Recognised text below this confidence, or with fewer letters and digits than this, is not text worth a
# quarantine: a lone glyph identifies nobody, and the detector sees "text" in speckle at low confidence.
MIN_SCORE = 0.5
MIN_CHARACTERS = 2
# Images are scaled so that their longer side is at most this before detection (smaller ones are not
# enlarged): a 1024 x 768 ultrasound screen keeps its 8-pixel glyphs legible, a 3000-pixel radiograph
# costs no more than a screen.
DETECTION_SIDE = 1280


@dataclass(frozen=True)
class TextBox:
    """Where text was found, in the image's pixels (the recognised text itself is never kept: it may be
    the identifier it found)."""

    x: int
    y: int
    width: int
    height: int

    def __str__(self) -> str:
        return f"(x={self.x}, y={self.y}, width={self.width}, height={self.height})"


class TextFinder(Protocol):
    """Finds text in one image: rows x columns (grey) or rows x columns x 3 (colour), 8 bits a sample."""

    @property
    def name(self) -> str: ...

    def find_text(self, image: npt.NDArray[np.uint8]) -> list[TextBox]: ...


def counts_as_text(text: str, score: float) -> bool:
    """Whether a recognised string is text: confident enough, with at least two letters or digits."""
    return score >= MIN_SCORE and sum(c.isalnum() for c in text) >= MIN_CHARACTERS


def box_around(points: Any) -> TextBox:
    """The upright box around a detector's quadrilateral (four (x, y) corners)."""
    xs = [float(p[0]) for p in points]
    ys = [float(p[1]) for p in points]
    x, y = int(min(xs)), int(min(ys))
    return TextBox(x, y, int(max(xs)) - x + 1, int(max(ys)) - y + 1)


class RapidOcr:
    """``TextFinder`` over RapidOCR (ONNX Runtime). The engine loads on first use, once per process."""

    name = "rapidocr-onnxruntime"

    def __init__(self) -> None:
        self._engine: Any = None

    def find_text(self, image: npt.NDArray[np.uint8]) -> list[TextBox]:
        if self._engine is None:
            # Untyped: imported by name, so that its absence or its lack of stubs costs no type checking.
            engine = importlib.import_module("rapidocr_onnxruntime").RapidOCR
            self._engine = engine(det_limit_side_len=DETECTION_SIDE, det_limit_type="max")
        # Text is upright on a screen: the 180-degree classifier only costs time.
        found, _ = self._engine(image, use_cls=False)
        return [box_around(points) for points, text, score in found or () if counts_as_text(text, score)]


def installed_finder() -> TextFinder | None:
    """The OCR engine this installation has (the ``ocr`` extra), or None."""
    return _rapidocr() if importlib.util.find_spec("rapidocr_onnxruntime") is not None else None


@functools.cache
def _rapidocr() -> RapidOcr:
    return RapidOcr()
