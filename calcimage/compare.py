"""Longitudinal comparison: ``compare(base, follow, params) -> Comparison``."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calcimage.measure import Measurement

__all__ = ["Status", "Category", "CompareParams", "Registration", "LesionChange", "Comparison", "compare"]

logger = logging.getLogger(__name__)


class Status(str, enum.Enum):
    """What happened to a lesion between baseline and follow-up."""

    NEW = "new"
    RESOLVED = "resolved"
    GROWN = "grown"
    SHRUNK = "shrunk"
    STABLE = "stable"


class Category(str, enum.Enum):
    """Film-level call (SCTC convention: ±25 % total area change by default)."""

    PROGRESSION = "progression"
    STABLE = "stable"
    REGRESSION = "regression"


@dataclass(frozen=True)
class CompareParams:
    """Every knob of :func:`compare`."""

    progression_pct: float = 25.0
    regression_pct: float = -25.0


@dataclass(frozen=True, eq=False)
class Registration:
    """Transform from follow-up pixel coordinates to baseline pixel coordinates.

    ``matrix`` is 2×3 and maps a follow-up point ``(row, col, 1)`` to baseline ``(row, col)``.
    ``scale`` is the isotropic magnification of follow-up relative to baseline (follow-up
    objects look ``scale`` times larger); ``quality`` is in [0, 1].
    """

    matrix: np.ndarray
    scale: float
    quality: float
    rotation_deg: float = 0.0
    method: str = ""


@dataclass(frozen=True)
class LesionChange:
    """One row of changes.csv."""

    baseline_id: int | None
    followup_id: int | None
    status: Status
    area_baseline_mm2: float | None
    area_followup_mm2: float | None  # at the baseline's magnification


@dataclass(frozen=True, eq=False)
class Comparison:
    """Result of :func:`compare`."""

    baseline: Measurement
    followup: Measurement
    registration: Registration
    lesions: tuple[LesionChange, ...]
    change: dict[str, Any]
    regions: tuple[dict[str, Any], ...]
    category: Category
    interval_days: int | None
    params: CompareParams = field(default_factory=CompareParams)


def compare(base: Measurement, follow: Measurement, params: CompareParams = CompareParams()) -> Comparison:
    """Compare a follow-up film with its baseline."""
    raise NotImplementedError("compare() lands with issue 5")
