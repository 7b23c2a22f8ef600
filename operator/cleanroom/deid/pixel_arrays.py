"""Decoded pixels as arrays: blanking regions, and the images an OCR engine is shown. Pure (numpy only).

Every function takes and gives frames x rows x columns x samples, whatever the image's frame and sample
counts, so a region is blanked in every frame and every sample alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cleanroom.deid.pixel_rules import Region

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# A cine loop is shown to the OCR engine as this many frames spread over it (first and last included) plus
# two images of all its frames: the darkest and the brightest value of each pixel. Text that stays put
# stands out in the first (moving anatomy darkens around it), text shown at any moment in the second.
SAMPLED_FRAMES = 4


def as_frames(array: npt.NDArray[Any], frames: int, samples: int) -> npt.NDArray[Any]:
    """pydicom's array (rows x columns, frames x rows x columns, with a trailing samples axis when there
    are several) as frames x rows x columns x samples."""
    if frames == 1 and array.ndim == (3 if samples > 1 else 2):
        array = array[None]
    if samples == 1:
        array = array[..., None]
    if array.ndim != 4 or array.shape[0] != frames or array.shape[3] != samples:
        raise ValueError(f"pixel array of shape {array.shape} for {frames} frames of {samples} samples")
    return array


def blank(frames: npt.NDArray[Any], regions: Sequence[Region]) -> tuple[npt.NDArray[Any], tuple[Region, ...]]:
    """A copy of ``frames`` with every region set to zero in every frame and sample, and the regions as
    blanked (clipped to the image; those wholly outside it left out)."""
    cleaned = frames.copy()
    rows, columns = frames.shape[1:3]
    done = []
    for region in regions:
        inside = region.within(rows, columns)
        if inside is None:
            continue
        cleaned[:, inside.y : inside.y + inside.height, inside.x : inside.x + inside.width, :] = 0
        done.append(inside)
    return cleaned, tuple(done)


def to_8bit(image: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """One rows x columns x samples image stretched to 0-255 (its darkest value to 0, its brightest to
    255): grey as rows x columns, colour as rows x columns x 3."""
    import numpy as np

    values = image.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(image.shape[:2], dtype=np.uint8)
    scaled: npt.NDArray[np.uint8] = np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)
    if scaled.shape[2] == 1:
        return scaled[..., 0]
    if scaled.shape[2] == 3:
        return scaled
    # Two or four samples (retired colour models): each pixel's brightest sample keeps any text visible.
    brightest: npt.NDArray[np.uint8] = scaled.max(axis=2)
    return brightest


def ocr_views(frames: npt.NDArray[Any]) -> list[tuple[str, npt.NDArray[np.uint8]]]:
    """The images an OCR engine is shown for ``frames``, each with what it shows: every frame of a short
    series; of a longer one, ``SAMPLED_FRAMES`` spread over it and each pixel's darkest and brightest value
    over all frames."""
    count = frames.shape[0]
    if count <= SAMPLED_FRAMES:
        return [(f"frame {index + 1}", to_8bit(frames[index])) for index in range(count)]
    picks = sorted({round(i * (count - 1) / (SAMPLED_FRAMES - 1)) for i in range(SAMPLED_FRAMES)})
    views = [(f"frame {index + 1}", to_8bit(frames[index])) for index in picks]
    views.append(("each pixel's darkest over all frames", to_8bit(frames.min(axis=0))))
    views.append(("each pixel's brightest over all frames", to_8bit(frames.max(axis=0))))
    return views
