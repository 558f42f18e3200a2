"""Unit tests for calcimage.measure on hand-made segmentations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calcimage.errors import ParameterError
from calcimage.film import Film, SpacingSource
from calcimage.measure import (
    LESION_COLUMNS, NO_SPACING_NOTE, MeasureParams, density_grade, measure, remeasure,
)
from calcimage.params import params_from_mapping
from calcimage.segment import LesionKind, SegmentParams, Segmentation


def _case(spacing: float | None, radius_px: int = 20, contrast: float = 100.0):
    n = 120
    rr, cc = np.mgrid[:n, :n]
    disc = (rr - 40) ** 2 + (cc - 40) ** 2 <= radius_px ** 2
    bar = (np.abs(rr - 100) <= 2) & (np.abs(cc - 60) <= 40)
    labels = np.zeros((n, n), np.int32)
    labels[disc] = 1
    labels[bar] = 2
    background = np.full((n, n), 1100.0, np.float32)
    flat = np.where(labels > 0, contrast, 0.0).astype(np.float32)
    pixels = background + flat
    film = Film(pixels, (spacing, spacing) if spacing else None,
                SpacingSource.USER if spacing else SpacingSource.NONE)
    seg = Segmentation(labels=labels, kinds=(LesionKind.NODULE, LesionKind.PLAQUE), threshold=10.0,
                       threshold_low=5.0, flattened=flat, background=background, air_level=100.0,
                       params=SegmentParams(), scale_spacing_mm=spacing or 0.2)
    return film, seg, disc, bar


@pytest.mark.parametrize("spacing", [0.1, 0.2])
def test_disc_measures(spacing: float) -> None:
    film, seg, disc, bar = _case(spacing)
    m = measure(film, seg)
    assert m.lesion_count == 2 and m.units == "mm" and m.note == ""
    d = m.lesions[0]
    assert d.lesion_id == 1 and d.kind is LesionKind.NODULE and d.region == "film"
    assert d.area_px == int(disc.sum())
    assert d.area_mm2 == pytest.approx(disc.sum() * spacing ** 2)
    assert d.equivalent_diameter_mm == pytest.approx(math.sqrt(4 * d.area_mm2 / math.pi))
    # marching squares on a digital disc runs ~7 % longer than the true circle
    assert d.perimeter_mm == pytest.approx(2 * math.pi * 20 * spacing, rel=0.09)
    assert d.major_axis_mm == pytest.approx(d.minor_axis_mm, rel=0.01)
    assert d.major_axis_mm == pytest.approx(40 * spacing, rel=0.03)
    assert (d.centroid_row, d.centroid_col) == (pytest.approx(40.0), pytest.approx(40.0))
    assert d.mean_intensity == pytest.approx(1200.0) and d.max_intensity == pytest.approx(1200.0)
    # relative contrast 100 / (1100 - 100) = 0.1 -> grade 3 with (0.05, 0.10, 0.20)
    assert d.relative_contrast == pytest.approx(0.1) and d.density_grade == 3
    assert d.burden == pytest.approx(d.area_mm2 * 3)
    assert m.lesions[1].eccentricity > 0.99
    assert m.total_area_mm2 == pytest.approx((disc.sum() + bar.sum()) * spacing ** 2)
    assert m.regions[0].name == "film" and m.regions[0].lesion_count == 2
    assert list(m.lesion_rows()[0]) == list(LESION_COLUMNS)
    assert set(m.params) >= {"segment", "measure", "regions"}
    np.testing.assert_array_equal(m.labels, seg.labels)


def test_no_spacing_gives_px_only() -> None:
    film, seg, disc, _ = _case(None)
    m = measure(film, seg)
    assert m.units == "px" and m.note == NO_SPACING_NOTE
    d = m.lesions[0]
    for name in ("area_mm2", "equivalent_diameter_mm", "major_axis_mm", "minor_axis_mm", "perimeter_mm"):
        assert getattr(d, name) is None
    assert d.burden == d.area_px * d.density_grade
    assert m.total_area_mm2 is None and m.regions[0].area_mm2 is None
    assert m.summary()["units"] == "px"


def test_grid_regions_and_exclusion(tmp_path) -> None:
    film, seg, disc, bar = _case(0.2)
    m = measure(film, seg, "grid 2x2")
    # bar: cols 20-100 -> 40 px in column 1 (< 60), 41 px in column 2: largest part wins
    assert [l.region for l in m.lesions] == ["r1c1", "r2c2"]
    totals = {r.name: r.lesion_count for r in m.regions}
    assert totals == {"r1c1": 1, "r1c2": 0, "r2c1": 0, "r2c2": 1}
    path = tmp_path / "ex.json"
    path.write_text('{"regions": [{"polygon": [[0,0],[0,119],[70,119],[70,0]], "exclude": true}]}')
    m2 = measure(film, seg, path)
    assert m2.lesion_count == 1 and m2.lesions[0].kind is LesionKind.PLAQUE
    assert m2.lesions[0].lesion_id == 1 and m2.labels.max() == 1
    assert m2.lesions[0].area_px == int(bar.sum())


def test_density_grade_and_params() -> None:
    p = MeasureParams()
    assert [density_grade(v, p) for v in (0.0, 0.05, 0.099, 0.1, 0.2)] == [1, 2, 2, 3, 4]
    with pytest.raises(ParameterError):
        MeasureParams(grade_thresholds=(0.2, 0.1, 0.3))
    q = params_from_mapping(MeasureParams, {"grade_thresholds": [0.1, 0.2, 0.3]}, section="measure")
    assert q.grade_thresholds == (0.1, 0.2, 0.3)


def test_remeasure_keeps_regions_and_params(tmp_path) -> None:
    film, seg, disc, bar = _case(0.2)
    path = tmp_path / "ex.json"
    path.write_text('{"regions": [{"polygon": [[0,0],[0,119],[70,119],[70,0]], "exclude": true}]}')
    params = MeasureParams(grade_thresholds=(0.01, 0.02, 0.03))
    m = measure(film, seg, path, params)
    assert m.measure_params == params and m.regions_spec == path
    # Another segmentation of the film: only the disc, now labelled 1 again.
    other = Segmentation(labels=np.where(disc, 1, 0).astype(np.int32), kinds=(LesionKind.NODULE,),
                         threshold=10.0, threshold_low=5.0, flattened=seg.flattened,
                         background=seg.background, air_level=100.0, params=SegmentParams(),
                         scale_spacing_mm=0.2)
    again = remeasure(m, other)
    # The exclusion (rows 0-70) still removes the disc; the grades keep their thresholds.
    assert again.lesion_count == 0 and again.regions_spec == path
    assert again.measure_params == params and again.params["regions"] == m.params["regions"]
    both = remeasure(m, seg)
    assert [l.area_px for l in both.lesions] == [l.area_px for l in m.lesions] == [int(bar.sum())]
    assert both.lesions[0].density_grade == 4  # 100 / 1000 = 0.1 reaches all three thresholds
