"""Segmentation of calcified nodules and plaques: ``segment(film, params) -> Segmentation``."""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from calcimage.film import Film

__all__ = ["LesionKind", "ThresholdMethod", "SegmentParams", "Segmentation", "segment"]

logger = logging.getLogger(__name__)


class LesionKind(str, enum.Enum):
    """Shape class of a lesion."""

    NODULE = "nodule"
    PLAQUE = "plaque"


class ThresholdMethod(str, enum.Enum):
    """How the lesion threshold is chosen on the background-flattened film."""

    AUTO = "auto"  # noise-scaled: k × robust noise sigma of the flattened film
    OTSU = "otsu"
    YEN = "yen"
    LI = "li"
    TRIANGLE = "triangle"
    FIXED = "fixed"


@dataclass(frozen=True)
class SegmentParams:
    """Every knob of :func:`segment`. Sizes and scales are in mm."""

    method: ThresholdMethod = ThresholdMethod.AUTO
    min_area_mm2: float = 1.0


@dataclass(frozen=True, eq=False)
class Segmentation:
    """Result of :func:`segment`.

    Attributes
    ----------
    labels
        int32 (rows, cols); 0 = background, k = lesion k (1..n, in raster order of first pixel).
    kinds
        ``kinds[k - 1]`` is the class of label k.
    threshold, threshold_low
        High and low (hysteresis) thresholds actually used, in units of ``flattened``.
    flattened
        float32 background-flattened film the thresholds apply to (contrast over local tissue).
    excluded
        Named boolean masks of what was kept out: ``outside_body``, ``collimation``,
        ``marker``, ``bone``.
    params
        The parameters used.
    """

    labels: np.ndarray
    kinds: tuple[LesionKind, ...]
    threshold: float
    threshold_low: float
    flattened: np.ndarray
    excluded: Mapping[str, np.ndarray] = field(default_factory=dict)
    params: SegmentParams = field(default_factory=SegmentParams)

    @property
    def n_lesions(self) -> int:
        """Number of labelled lesions."""
        return len(self.kinds)


def segment(film: Film, params: SegmentParams = SegmentParams()) -> Segmentation:
    """Find calcified lesions on a film."""
    raise NotImplementedError("segment() lands with issue 4")
