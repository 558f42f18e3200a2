"""calcimage.report.overlay: outlines, colours, 16-bit labels, warping."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from _report_builders import make_comparison, make_measurement
from calcimage.errors import OutputError
from calcimage.report.overlay import (
    KIND_COLOURS,
    STATUS_COLOURS,
    comparison_overlay,
    display_image,
    labels_png_bytes,
    measure_overlay,
    outline_mask,
    warp_to_baseline,
    write_labels_png,
)


def test_outline_mask_is_the_inner_edge() -> None:
    labels = np.zeros((6, 6), np.int32)
    labels[1:5, 1:5] = 1
    expected = np.zeros((6, 6), bool)
    expected[1:5, 1:5] = True
    expected[2:4, 2:4] = False
    assert np.array_equal(outline_mask(labels), expected)


def test_touching_lesions_both_get_edges() -> None:
    labels = np.zeros((3, 4), np.int32)
    labels[:, :2], labels[:, 2:] = 1, 2
    edge = outline_mask(labels)
    assert edge[:, 1].all() and edge[:, 2].all() and not edge[:, 0].any()


def test_display_image_window() -> None:
    px = np.arange(1000, dtype=np.float32).reshape(20, 50)
    img = display_image(px)
    assert img.dtype == np.uint8 and img.min() == 0 and img.max() == 255
    assert display_image(np.full((3, 3), 7.0)).tolist() == [[0] * 3] * 3


def _display_reference(pixels: np.ndarray) -> np.ndarray:
    """The rendering rule written the plain way (full-size float64)."""
    px = np.asarray(pixels, dtype=np.float64)
    finite = px[np.isfinite(px)]
    if finite.size == 0:
        return np.zeros(px.shape, dtype=np.uint8)
    lo, hi = np.percentile(finite, [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    scaled = np.clip((np.nan_to_num(px, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    return np.round(scaled * 255.0).astype(np.uint8)


def _films() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    twelve_bit = rng.integers(0, 4096, (700, 301)).astype(np.float32)  # duplicates: exact order stats
    continuous = rng.normal(1000.0, 300.0, (611, 257)).astype(np.float32)  # distinct: float64 fallback
    holes = continuous.copy()
    holes[::7, ::5] = np.nan
    holes[3, 4], holes[5, 6] = np.inf, -np.inf
    return {
        "12-bit float32": twelve_bit,
        "continuous float32": continuous,
        "nan and inf": holes,
        "uint16": rng.integers(0, 65535, (300, 520)).astype(np.uint16),
        "float64": rng.random((257, 3)),
        "one row": continuous[:1],
        "constant": np.full((3, 3), 7.0),
        "all nan": np.full((2, 5), np.nan, np.float32),
    }


@pytest.mark.parametrize("name", list(_films()))
def test_display_image_matches_the_plain_float64_rule(name: str) -> None:
    px = _films()[name]
    before = px.copy()
    img = display_image(px)
    assert img.dtype == np.uint8 and img.shape == px.shape
    assert np.array_equal(img, _display_reference(px))
    assert np.array_equal(px, before, equal_nan=px.dtype.kind == "f")  # input untouched


@pytest.mark.parametrize("offset", [0, 70000])  # labels in uint16, and beyond it
@pytest.mark.parametrize("corner_only", [False, True])
def test_thick_outlines_take_the_nearest_label(offset: int, corner_only: bool) -> None:
    from calcimage.report.overlay import _line_width, _paint

    labels = np.zeros((1300, 700), np.int32)  # 1300 rows: outlines 2 pixels wide
    labels[100:200, 100:150] = 1 + offset
    labels[150:260, 150:300] = 2 + offset  # touches lesion 1
    labels[600:603, 600:602] = 3 + offset
    labels[1295:, 690:] = 4 + offset  # in the film's corner
    labels[0:3, 0:700] = 5 + offset  # along the top edge
    if corner_only:  # a small bounding box at the film's edge
        labels[labels != 4 + offset] = 0
    colours = {1 + offset: (1, 2, 3), 2 + offset: (4, 5, 6), 3 + offset: (7, 8, 9), 4 + offset: (10, 11, 12),
               5 + offset: (13, 14, 15)}
    grey = np.full(labels.shape, 100, np.uint8)
    width = _line_width(labels.shape)
    assert width == 2
    # The rule written the plain way: the dilated (max) label on every outline pixel.
    edge = outline_mask(labels, width)
    nearest = cv2.dilate(labels.astype(np.float32), np.ones((width, width), np.uint8)).astype(np.int64)
    expected = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    expected[edge] = [colours[int(k)] for k in nearest[edge]]
    assert np.array_equal(_paint(grey, labels, colours), expected)


def test_measure_overlay_colours_by_kind() -> None:
    m = make_measurement(0.1)
    img = measure_overlay(m)
    assert img.shape == (40, 50, 3) and img.dtype == np.uint8
    assert tuple(img[5, 5]) == KIND_COLOURS["nodule"]  # corner of lesion 1
    assert tuple(img[20, 10]) == KIND_COLOURS["plaque"]  # corner of lesion 2
    assert img[30, 30, 0] == img[30, 30, 1] == img[30, 30, 2]  # background stays grey


@pytest.mark.parametrize("n", [1, 300, 65535])
def test_labels_png_roundtrip_16_bit(tmp_path: Path, n: int) -> None:
    labels = np.zeros((5, 7), np.int32)
    labels[2, 3] = n
    write_labels_png(tmp_path / "l.png", labels)
    back = cv2.imread(str(tmp_path / "l.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and back.shape == (5, 7) and int(back[2, 3]) == n and int(back.sum()) == n


def test_labels_beyond_16_bit_are_refused() -> None:
    with pytest.raises(OutputError, match="65535"):
        labels_png_bytes(np.array([[70000]], np.int32))


def test_png_has_no_text_chunks(tmp_path: Path) -> None:
    data = labels_png_bytes(np.ones((4, 4), np.int32))
    assert b"tEXt" not in data and b"iTXt" not in data and b"zTXt" not in data


def test_warp_translation_in_row_col() -> None:
    img = np.zeros((10, 10), np.uint8)
    img[2, 3] = 9
    # follow-up (row, col) -> baseline (row + 4, col + 1)
    matrix = np.array([[1.0, 0.0, 4.0], [0.0, 1.0, 1.0]])
    out = warp_to_baseline(img, matrix, (10, 10), nearest=True)
    assert out[6, 4] == 9 and int(out.sum()) == 9


def test_comparison_overlay_side_by_side_by_status() -> None:
    c = make_comparison()
    img = comparison_overlay(c)
    assert img.shape[0] == 40 and img.shape[1] == 2 * 50 + 4
    assert tuple(img[5, 5]) == STATUS_COLOURS["stable"]
    assert tuple(img[20, 10]) == STATUS_COLOURS["resolved"]
    assert tuple(img[20, 54 + 10]) == STATUS_COLOURS["new"]
