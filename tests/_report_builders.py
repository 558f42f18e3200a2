"""Hand-built Film / Segmentation / Measurement / Comparison values for report tests.

The numbers are chosen by hand so expected outputs are exact; nothing runs segment/measure.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from calcimage.compare import Category, Comparison, CompareParams, LesionChange, Registration, Status
from calcimage.film import Film, FilmMetadata, SpacingSource
from calcimage.measure import Lesion, Measurement, RegionTotal
from calcimage.segment import LesionKind, Segmentation, SegmentParams


def make_film(spacing: float | None = 0.1, *, shape=(40, 50), patient_id="P01", date=dt.date(2026, 1, 5)) -> Film:
    rows, cols = shape
    pixels = np.tile(np.linspace(0, 1000, cols, dtype=np.float32), (rows, 1))
    pixels[5:10, 5:12] = 3000  # lesion 1 (nodule)
    pixels[20:23, 10:40] = 2500  # lesion 2 (plaque)
    meta = FilmMetadata(source_format="png", patient_id=patient_id, study_date=date, laterality="L", view_position="PA")
    return Film(
        pixels=pixels,
        spacing_mm=None if spacing is None else (spacing, spacing),
        spacing_source=SpacingSource.NONE if spacing is None else SpacingSource.USER,
        metadata=meta,
        sha256="ab" * 32,
    )


def make_measurement(spacing: float | None = 0.1, shape=(40, 50)) -> Measurement:
    film = make_film(spacing, shape=shape)
    labels = np.zeros(shape, dtype=np.int32)
    labels[5:10, 5:12] = 1
    labels[20:23, 10:40] = 2
    seg = Segmentation(
        labels=labels,
        kinds=(LesionKind.NODULE, LesionKind.PLAQUE),
        threshold=10.0,
        threshold_low=5.0,
        flattened=np.zeros(shape, dtype=np.float32),
        params=SegmentParams(),
    )
    px_area = None if spacing is None else spacing * spacing

    def mm(v):
        return None if spacing is None else v * spacing

    lesions = (
        Lesion(1, "whole", LesionKind.NODULE, None if px_area is None else 35 * px_area, 35, 7.0, 8.0,
               mm(6.68), mm(7.5), mm(5.1), mm(22.0), 0.71, 1.0, 3000.0, 3000.0, 3,
               (35 * px_area if px_area else 35) * 3),
        Lesion(2, "whole", LesionKind.PLAQUE, None if px_area is None else 90 * px_area, 90, 21.0, 24.5,
               mm(10.7), mm(30.0), mm(3.0), mm(64.0), 0.99, 1.0, 2500.0, 2500.0, 2,
               (90 * px_area if px_area else 90) * 2),
    )
    regions = (
        RegionTotal("whole", 2, None if px_area is None else 125 * px_area, 125, sum(l.burden for l in lesions)),
    )
    return Measurement(film=film, segmentation=seg, labels=labels, lesions=lesions, regions=regions,
                       params={})


def make_comparison(spacing: float | None = 0.1) -> Comparison:
    base = make_measurement(spacing)
    follow = make_measurement(spacing)
    reg = Registration(matrix=np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), scale=1.0, quality=0.97)
    lesions = (
        LesionChange(1, 1, Status.STABLE, 0.35, 0.35),
        LesionChange(2, None, Status.RESOLVED, 0.9, None),
        LesionChange(None, 2, Status.NEW, None, 0.9),
    )
    change = {"total_area_mm2": 0.0, "total_area_pct": 0.0, "lesion_count": 0, "total_burden_pct": 0.0}
    return Comparison(
        baseline=base, followup=follow, registration=reg, lesions=lesions, change=change,
        regions=({"name": "whole", "area_baseline_mm2": 1.25, "area_followup_mm2": 1.25, "area_pct": 0.0},),
        category=Category.STABLE, interval_days=91, params=CompareParams(),
    )
