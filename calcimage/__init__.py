"""calcimage: measure calcinosis on plain radiographs and its change over time.

The flow is ``load -> segment -> measure -> compare -> report``; each stage is a plain
function over immutable values::

    import calcimage
    base = calcimage.load("baseline.dcm")
    m0 = calcimage.measure(base, calcimage.segment(base))
    follow = calcimage.load("followup.dcm")
    m1 = calcimage.measure(follow, calcimage.segment(follow))
    change = calcimage.compare(m0, m1)
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

from calcimage.errors import (
    CalcimageError,
    FilmReadError,
    IncompatibleFilmsError,
    OutputError,
    ParameterError,
    RegistrationError,
)
from calcimage.compare import Category, CompareParams, Comparison, LesionChange, Status, compare
from calcimage.film import Film, FilmMetadata, SpacingSource
from calcimage.io.load import load
from calcimage.measure import Lesion, MeasureParams, Measurement, RegionTotal, measure
from calcimage.params import Config, load_config
from calcimage.regions import Regions, load_regions
from calcimage.segment import LesionKind, SegmentParams, Segmentation, ThresholdMethod, segment

try:
    __version__ = version("calcimage")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "CalcimageError", "FilmReadError", "ParameterError", "RegistrationError",
    "IncompatibleFilmsError", "OutputError",
    "Film", "FilmMetadata", "SpacingSource",
    "load", "segment", "measure", "load_config", "Config",
    "SegmentParams", "Segmentation", "LesionKind", "ThresholdMethod",
    "Measurement", "Lesion", "RegionTotal", "MeasureParams", "Regions", "load_regions",
    "compare", "CompareParams", "Comparison", "LesionChange", "Status", "Category",
    "__version__",
]
