"""Pictures for a human check: label PNGs and overlays of lesion outlines on the film.

Colours (outline colour, BGR in code):

- measure overlay, by kind: nodule = yellow, plaque = magenta;
- compare overlay, by status: new = red, grown = orange, stable = yellow, shrunk = cyan,
  resolved = green.

PNGs are encoded by OpenCV, which writes no text chunks, so no metadata (and no patient
identity) travels in them; the bytes depend only on the pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from calcimage.errors import OutputError
from calcimage.measure import Measurement
from calcimage.report.atomic import write_bytes
from calcimage.segment import LesionKind

__all__ = [
    "KIND_COLOURS",
    "STATUS_COLOURS",
    "display_image",
    "outline_mask",
    "measure_overlay",
    "comparison_overlay",
    "warp_to_baseline",
    "thumbnail",
    "png_bytes",
    "labels_png_bytes",
    "write_png",
    "write_labels_png",
]

#: Outline colour (B, G, R) per lesion kind.
KIND_COLOURS: dict[str, tuple[int, int, int]] = {
    LesionKind.NODULE.value: (0, 230, 255),
    LesionKind.PLAQUE.value: (255, 0, 255),
}
#: Outline colour (B, G, R) per change status.
STATUS_COLOURS: dict[str, tuple[int, int, int]] = {
    "new": (0, 0, 255),
    "grown": (0, 140, 255),
    "stable": (0, 230, 255),
    "shrunk": (255, 255, 0),
    "resolved": (0, 200, 0),
}


#: Rows scaled per block in :func:`display_image` (bounds its float64 scratch to a few MB).
_BLOCK_ROWS = 256


def _percentiles(values: np.ndarray, q: tuple[float, float]) -> tuple[float, float]:
    """``np.percentile(values.astype(float64), q)`` without a float64 copy of the film, when it can.

    ``values`` is a 1-D scratch copy (partitioned in place). numpy's linear interpolation
    between two equal neighbouring order statistics returns that value exactly, so when the
    order statistics around each percentile's position agree (always, in practice, for films
    of a few thousand grey levels) they are the answer; otherwise numpy computes it in float64.
    """
    n = values.size
    positions = [q_ / 100.0 * (n - 1) for q_ in q]
    # A margin of one on each side absorbs any rounding of the position inside numpy.
    kth = sorted({min(max(k, 0), n - 1) for pos in positions for k in range(int(pos) - 1, int(pos) + 3)})
    values.partition(kth)
    out = []
    for pos in positions:
        around = values[[min(max(k, 0), n - 1) for k in range(int(pos) - 1, int(pos) + 3)]]
        if not (around == around[0]).all():
            return tuple(float(v) for v in np.percentile(values.astype(np.float64), q, overwrite_input=True))
        out.append(float(around[0]))
    return out[0], out[1]


def display_image(pixels: np.ndarray) -> np.ndarray:
    """8-bit grey rendering of film pixels (0.5–99.5 percentile window, brighter = denser).

    Computed as ``round(clip((x − lo) / (hi − lo), 0, 1) × 255)`` in float64, block by block
    of rows so that no full-size float64 copy of the film is made.
    """
    px = np.asarray(pixels)
    if px.dtype.kind == "f":
        finite_mask = np.isfinite(px)
        finite = px.ravel() if finite_mask.all() else px[finite_mask]
        del finite_mask
    else:
        finite = px.ravel()
    if finite.size == 0:
        return np.zeros(px.shape, dtype=np.uint8)
    # A scratch copy in the film's own dtype (float32: half a float64 copy), partitioned in place.
    values = np.array(finite, dtype=px.dtype if px.dtype.kind in "fiub" else np.float64, copy=True)
    del finite
    lo, hi = _percentiles(values, (0.5, 99.5))
    del values
    lo, hi = np.float64(lo), np.float64(hi)
    if hi <= lo:
        hi = lo + 1.0
    out = np.empty(px.shape, dtype=np.uint8)
    if px.ndim == 0:
        blocks = [()]
    else:
        blocks = [slice(r, r + _BLOCK_ROWS) for r in range(0, px.shape[0], _BLOCK_ROWS)]
    for block in blocks:
        x = np.array(px[block], dtype=np.float64)
        if px.dtype.kind == "f":
            np.nan_to_num(x, copy=False, nan=lo)
        np.subtract(x, lo, out=x)
        np.divide(x, hi - lo, out=x)
        np.clip(x, 0.0, 1.0, out=x)
        np.multiply(x, 255.0, out=x)
        np.round(x, out=x)
        out[block] = x
    return out


def _line_width(shape: tuple[int, ...]) -> int:
    # About 1 px per 600 px of film so outlines stay visible once the picture is scaled down.
    return max(1, int(round(max(shape[:2]) / 600)))


def outline_mask(labels: np.ndarray, width: int = 1) -> np.ndarray:
    """Boolean mask of lesion boundary pixels (inner edge), thickened to ``width`` pixels."""
    lab = np.asarray(labels)
    edge = np.zeros(lab.shape, dtype=bool)
    edge[:-1, :] |= lab[:-1, :] != lab[1:, :]
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    edge &= lab > 0
    if width > 1:
        kernel = np.ones((width, width), dtype=np.uint8)
        grown = cv2.dilate(edge.astype(np.uint8), kernel) > 0
        edge = grown & (cv2.dilate((lab > 0).astype(np.uint8), kernel) > 0)
    return edge


def _paint(grey: np.ndarray, labels: np.ndarray, colour_of_label: Mapping[int, tuple[int, int, int]]) -> np.ndarray:
    rgb = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    lab = np.asarray(labels)
    width = _line_width(lab.shape)
    # Outlines are found inside the lesions' bounding box (plus a margin wider than the
    # thickening reaches), not over the whole film: same pixels, a fraction of the work.
    inside = lab > 0
    rows = np.flatnonzero(inside.any(axis=1))
    if rows.size == 0:
        return rgb
    cols = np.flatnonzero(inside.any(axis=0))
    del inside
    pad = width + 1
    box = (slice(max(int(rows[0]) - pad, 0), int(rows[-1]) + pad + 1),
           slice(max(int(cols[0]) - pad, 0), int(cols[-1]) + pad + 1))
    lab = lab[box]
    edge = outline_mask(lab, width)
    if not edge.any():
        return rgb
    # Edges of a thickened outline may fall just outside the lesion: take the nearest label.
    if width > 1:
        # A max filter: uint16 when the labels fit (half the memory of float32), else float32
        # (exact for labels below 2**24).
        small = int(lab.min()) >= 0 and int(lab.max()) <= 65535
        lab = cv2.dilate(lab.astype(np.uint16 if small else np.float32), np.ones((width, width), np.uint8))
    values = lab[edge].astype(np.int64)
    lut = np.zeros((int(values.max()) + 1, 3), dtype=np.uint8)
    for label, colour in colour_of_label.items():
        if 0 < label < lut.shape[0]:
            lut[label] = colour
    rgb[box][edge] = lut[values]
    return rgb


def measure_overlay(measurement: Measurement) -> np.ndarray:
    """BGR uint8 picture of the film with each lesion outlined in its kind's colour."""
    colours = {
        lesion.lesion_id: KIND_COLOURS.get(getattr(lesion.kind, "value", str(lesion.kind)), (0, 0, 255))
        for lesion in measurement.lesions
    }
    return _paint(display_image(measurement.film.pixels), measurement.labels, colours)


def _cv_matrix(matrix: np.ndarray) -> np.ndarray:
    """2×3 (row, col) affine -> OpenCV's (x, y) = (col, row) convention."""
    m = np.asarray(matrix, dtype=np.float64)
    return np.array([[m[1, 1], m[1, 0], m[1, 2]], [m[0, 1], m[0, 0], m[0, 2]]], dtype=np.float64)


def warp_to_baseline(image: np.ndarray, matrix: np.ndarray, shape: tuple[int, int], *, nearest: bool) -> np.ndarray:
    """Resample a follow-up image onto the baseline grid with the registration ``matrix``
    (which maps follow-up (row, col) to baseline (row, col))."""
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    src = np.asarray(image)
    if nearest and src.dtype not in (np.uint8, np.uint16, np.int16, np.float32):
        src = src.astype(np.float32)
    out = cv2.warpAffine(src, _cv_matrix(matrix), (int(shape[1]), int(shape[0])), flags=flags, borderValue=0)
    return out.astype(np.asarray(image).dtype) if nearest else out


def comparison_overlay(comparison: Any) -> np.ndarray:
    """Baseline (left) and registered follow-up (right) side by side, lesions by status."""
    base = comparison.baseline
    follow = comparison.followup
    shape = base.film.shape
    base_colours: dict[int, tuple[int, int, int]] = {}
    follow_colours: dict[int, tuple[int, int, int]] = {}
    for change in comparison.lesions:
        colour = STATUS_COLOURS.get(getattr(change.status, "value", str(change.status)), (0, 0, 255))
        if change.baseline_id is not None:
            base_colours[int(change.baseline_id)] = colour
        if change.followup_id is not None:
            follow_colours[int(change.followup_id)] = colour
    gap = max(4, shape[1] // 100)
    # Each half is painted straight into its place: no separate halves to concatenate.
    picture = np.empty((shape[0], 2 * shape[1] + gap, 3), dtype=np.uint8)
    picture[:, shape[1]:shape[1] + gap] = 255
    picture[:, :shape[1]] = _paint(display_image(base.film.pixels), base.labels, base_colours)
    matrix = comparison.registration.matrix
    follow_grey = warp_to_baseline(display_image(follow.film.pixels), matrix, shape, nearest=False)
    labels = np.asarray(follow.labels)
    # Nearest-neighbour warping copies values, so uint16 (when the labels fit) gives the same
    # labels as float32 in half the memory.
    fits = labels.size == 0 or (int(labels.min()) >= 0 and int(labels.max()) <= 65535)
    follow_labels = warp_to_baseline(labels.astype(np.uint16 if fits else np.float32), matrix, shape, nearest=True)
    picture[:, shape[1] + gap:] = _paint(follow_grey, follow_labels if fits else follow_labels.astype(np.int32),
                                         follow_colours)
    return picture


def thumbnail(image: np.ndarray, max_side: int = 900) -> np.ndarray:
    """Scale ``image`` down (area interpolation) so its longer side is at most ``max_side``."""
    rows, cols = image.shape[:2]
    factor = max_side / max(rows, cols)
    if factor >= 1:
        return image
    size = (max(1, int(round(cols * factor))), max(1, int(round(rows * factor))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an 8- or 16-bit grey or BGR image as PNG (no metadata chunks)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise OutputError(f"cannot encode a {image.shape} {image.dtype} image as PNG")
    return buf.tobytes()


def labels_png_bytes(labels: np.ndarray) -> bytes:
    """16-bit PNG of a label image (0 = background, k = lesion k).

    Raises
    ------
    OutputError
        When a label does not fit in 16 bits (more than 65535 lesions) or is negative.
    """
    lab = np.asarray(labels)
    if lab.size and (int(lab.min()) < 0 or int(lab.max()) > 65535):
        raise OutputError(
            f"label image holds values {int(lab.min())}..{int(lab.max())}; a 16-bit labels.png "
            "holds 0..65535 — raise the segmentation's min_area_mm2 to find fewer lesions"
        )
    return png_bytes(lab.astype(np.uint16))


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Encode and write a PNG atomically."""
    write_bytes(path, png_bytes(image))


def write_labels_png(path: str | Path, labels: np.ndarray) -> None:
    """Write labels.png (16-bit) atomically."""
    write_bytes(path, labels_png_bytes(labels))
