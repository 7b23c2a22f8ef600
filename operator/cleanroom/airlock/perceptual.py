"""Image fingerprints that survive what a modeller does to a slice on its way out: a difference hash
(dHash) of a downscaled grey image, and an exact hash of pixel values whatever their dtype.

The difference hash shrinks the image by area averaging to a 17 x 17 grid and keeps, for each row, whether
each cell is brighter than its left neighbour: 272 bits. Downscaling, re-encoding (PNG, JPEG), a change of
dtype, the modality LUT (slope and intercept) and windowing to 8 bits leave most bits alone, since each is
a monotonic change of intensity or a resampling; an exported image is hashed in all eight orientations
(rotations and mirror images), so flipping a slice does not hide it. 272 bits make a chance match of
unrelated images (model weights, plots) vanishingly rare at the threshold used: two independent hashes
within 56 bits of each other are over nine standard deviations from the mean of 136. Pure numpy.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

GRID = 17
HASH_BITS = GRID * (GRID - 1)
HASH_BYTES = HASH_BITS // 8
# At most this many of the 272 bits may differ for two images to be judged the same picture.
MATCH_DISTANCE = 56
# Smaller images carry too little to compare: kernels and bias vectors of a model, icons.
MIN_SIDE = 16
# A hash with almost every bit the same comes from an image with almost no structure (flat, a ramp).
_MIN_STRUCTURE = 8

FloatArray = npt.NDArray[np.float64]


def grey(image: npt.NDArray[np.generic]) -> FloatArray | None:
    """A 2-D float view of an image: a grey one as it is, colour (H, W, 3|4) as the mean of its channels."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        array = array[:, :, :3].astype(np.float64).mean(axis=2)
    if array.ndim != 2 or array.dtype.kind not in "biuf":
        return None
    return array.astype(np.float64)


def area_resize(image: FloatArray, rows: int, cols: int) -> FloatArray:
    """``image`` shrunk to rows x cols by averaging the area each output cell covers (an integral image)."""
    height, width = image.shape
    ys = np.linspace(0, height, rows + 1).round().astype(int)
    xs = np.linspace(0, width, cols + 1).round().astype(int)
    integral = np.zeros((height + 1, width + 1))
    integral[1:, 1:] = np.nan_to_num(image).cumsum(axis=0).cumsum(axis=1)
    y0, y1, x0, x1 = ys[:-1], ys[1:], xs[:-1], xs[1:]
    sums = (
        integral[np.ix_(y1, x1)]
        - integral[np.ix_(y0, x1)]
        - integral[np.ix_(y1, x0)]
        + integral[np.ix_(y0, x0)]
    )
    areas = np.maximum((y1 - y0)[:, None] * (x1 - x0)[None, :], 1)
    resized: FloatArray = sums / areas
    return resized


def _cells(image: npt.NDArray[np.generic]) -> FloatArray | None:
    plane = grey(image)
    if plane is None or min(plane.shape) < MIN_SIDE:
        return None
    return area_resize(plane, GRID, GRID)


def _bits(cells: FloatArray) -> bytes | None:
    bits = cells[:, 1:] > cells[:, :-1]
    if not _MIN_STRUCTURE <= int(bits.sum()) <= HASH_BITS - _MIN_STRUCTURE:
        return None
    return bytes(np.packbits(bits.ravel()))


def difference_hash(image: npt.NDArray[np.generic]) -> bytes | None:
    """The 272-bit difference hash of an image (34 bytes), or None for an image too small or too flat to
    judge."""
    cells = _cells(image)
    return None if cells is None else _bits(cells)


def difference_hashes(image: npt.NDArray[np.generic]) -> list[bytes]:
    """The difference hashes of an image in its eight orientations (four rotations, each mirrored)."""
    cells = _cells(image)
    if cells is None:
        return []
    found = []
    for turns in range(4):
        turned = np.rot90(cells, turns)
        for grid in (turned, turned[:, ::-1]):
            hashed = _bits(np.ascontiguousarray(grid))
            if hashed is not None:
                found.append(hashed)
    return found


def distances(hash_: bytes, known: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    """Hamming distance from ``hash_`` to each row of ``known`` (an N x HASH_BYTES array of hashes)."""
    if known.size == 0:
        return np.zeros(0, dtype=np.int64)
    mine = np.frombuffer(hash_, dtype=np.uint8)
    differing: npt.NDArray[np.int64] = np.unpackbits(known ^ mine, axis=1).sum(axis=1, dtype=np.int64)
    return differing


def value_hash(image: npt.NDArray[np.generic]) -> str:
    """sha256 of an array's shape and values as float64: the same for the int16 slice pydicom gives and
    that slice cast to float32, which the bytes of the two do not share."""
    array = np.asarray(image)
    canonical = np.ascontiguousarray(array, dtype="<f8")
    header = "x".join(str(n) for n in array.shape).encode()
    return hashlib.sha256(header + b"\0" + canonical.tobytes()).hexdigest()
