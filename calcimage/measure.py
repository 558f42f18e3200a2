"""Measurement of lesions and regions: ``measure(film, seg, regions) -> Measurement``."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calcimage.film import Film
from calcimage.segment import LesionKind, Segmentation

__all__ = ["Lesion", "RegionTotal", "MeasureParams", "Measurement", "measure", "LESION_COLUMNS"]

logger = logging.getLogger(__name__)

#: Column order of lesions.csv (the design's output contract).
LESION_COLUMNS: tuple[str, ...] = (
    "lesion_id", "region", "kind", "area_mm2", "area_px", "centroid_row", "centroid_col",
    "equivalent_diameter_mm", "major_axis_mm", "minor_axis_mm", "perimeter_mm",
    "eccentricity", "solidity", "mean_intensity", "max_intensity", "density_grade", "burden",
)


@dataclass(frozen=True)
class MeasureParams:
    """Knobs of :func:`measure` (density grading)."""


@dataclass(frozen=True)
class Lesion:
    """One row of lesions.csv. mm fields are None when the film has no spacing."""

    lesion_id: int
    region: str
    kind: LesionKind
    area_mm2: float | None
    area_px: int
    centroid_row: float
    centroid_col: float
    equivalent_diameter_mm: float | None
    major_axis_mm: float | None
    minor_axis_mm: float | None
    perimeter_mm: float | None
    eccentricity: float
    solidity: float
    mean_intensity: float
    max_intensity: float
    density_grade: int
    #: area × density grade, in mm² (or px when the film has no spacing).
    burden: float


@dataclass(frozen=True)
class RegionTotal:
    """Per-region totals."""

    name: str
    lesion_count: int
    area_mm2: float | None
    area_px: int
    burden: float


@dataclass(frozen=True, eq=False)
class Measurement:
    """Result of :func:`measure`: per-lesion table, per-region totals, film totals.

    ``labels`` holds lesion k of ``lesions`` as label k; ``film`` and ``segmentation`` are
    kept so that :func:`calcimage.compare` can register and match.
    """

    film: Film
    segmentation: Segmentation
    labels: np.ndarray
    lesions: tuple[Lesion, ...]
    regions: tuple[RegionTotal, ...]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def lesion_count(self) -> int:
        return len(self.lesions)

    @property
    def total_area_px(self) -> int:
        return int(sum(l.area_px for l in self.lesions))

    @property
    def total_area_mm2(self) -> float | None:
        if self.film.spacing_mm is None:
            return None
        return float(sum(l.area_mm2 or 0.0 for l in self.lesions))

    @property
    def total_burden(self) -> float:
        return float(sum(l.burden for l in self.lesions))


def measure(film: Film, seg: Segmentation, regions: Any = None) -> Measurement:
    """Measure every lesion of ``seg`` on ``film``."""
    raise NotImplementedError("measure() lands with issue 4")
