"""The :class:`Film` value: pixels, spacing and the metadata calcimage uses."""

from __future__ import annotations

import datetime as _dt
import enum
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Film", "FilmMetadata", "SpacingSource"]


class SpacingSource(str, enum.Enum):
    """Where a film's pixel spacing came from."""

    PIXEL_SPACING = "PixelSpacing"
    #: ImagerPixelSpacing corrected by EstimatedRadiographicMagnificationFactor.
    IMAGER_ERMF = "ImagerPixelSpacing/ERMF"
    #: ImagerPixelSpacing at the detector plane (objects are magnified by the beam geometry).
    IMAGER = "ImagerPixelSpacing"
    USER = "user"
    #: A sidecar ``NAME.json`` next to a PNG/TIFF/JPEG.
    SIDECAR = "sidecar"
    NONE = "none"


@dataclass(frozen=True)
class FilmMetadata:
    """What calcimage knows about a film besides its pixels.

    Never holds the patient's name or birth date. ``patient_id`` is kept because grouping
    follow-up films needs it; outputs use it only where grouping does.
    """

    source_format: str = "unknown"  # "dicom", "png", "tiff", "jpeg"
    patient_id: str | None = None
    study_date: _dt.date | None = None
    laterality: str | None = None
    view_position: str | None = None
    body_part: str | None = None
    modality: str | None = None
    sop_instance_uid: str | None = None
    series_instance_uid: str | None = None
    study_instance_uid: str | None = None
    sop_class_uid: str | None = None
    photometric_interpretation: str | None = None
    presentation_lut_shape: str | None = None
    bits_stored: int | None = None
    transfer_syntax: str | None = None
    #: True when stored values were inverted so that brighter means denser.
    inverted: bool = False
    #: "rescale", "sequence" or "none": which modality LUT was applied.
    modality_lut: str = "none"
    #: VOI windows (center, width) as stored; display settings only, never applied.
    voi_windows: tuple[tuple[float, float], ...] = ()
    voi_lut_function: str | None = None
    voi_lut_sequence: bool = False
    #: Range the pixel values can take after the modality LUT (lo, hi).
    value_range: tuple[float, float] | None = None
    #: Free-form notes the loader recorded (e.g. "no file meta: assumed implicit VR little endian").
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Film:
    """A radiograph ready for measurement.

    Attributes
    ----------
    pixels
        float32 array (rows, cols), read-only, brighter = denser, modality LUT applied,
        VOI/display windows not applied. Not copied when already float32: do not modify
        the array you passed in afterwards.
    spacing_mm
        (row, col) pixel spacing in mm, or None when unknown.
    spacing_source
        Where ``spacing_mm`` came from.
    metadata
        Patient id, date, laterality, view, UIDs and photometric handling.
    path
        The file it was loaded from, if any.
    sha256
        Hex digest of the input file's bytes ("" for films not read from a file).
    """

    pixels: np.ndarray
    spacing_mm: tuple[float, float] | None
    spacing_source: SpacingSource
    metadata: FilmMetadata = field(default_factory=FilmMetadata)
    path: Path | None = None
    sha256: str = ""

    def __post_init__(self) -> None:
        px = np.asarray(self.pixels)
        if px.ndim != 2:
            raise ValueError(f"Film pixels must be 2-D (rows, cols), got shape {px.shape}")
        # A read-only view: the Film cannot change its pixels, the caller's array stays
        # writeable, and no 40 MB copy is made of a freshly decoded film.
        px = px.astype(np.float32, copy=False).view()
        px.flags.writeable = False
        object.__setattr__(self, "pixels", px)
        if self.spacing_mm is not None:
            r, c = (float(v) for v in self.spacing_mm)
            if not (np.isfinite(r) and np.isfinite(c) and r > 0 and c > 0):
                raise ValueError(f"spacing_mm must be two positive numbers, got {self.spacing_mm!r}")
            object.__setattr__(self, "spacing_mm", (r, c))
        elif self.spacing_source not in (SpacingSource.NONE,):
            raise ValueError(f"spacing_source {self.spacing_source.value!r} needs a spacing_mm")

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the pixel grid."""
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))

    @property
    def name(self) -> str:
        """File stem, used to name output folders."""
        return self.path.stem if self.path is not None else "film"

    @property
    def pixel_area_mm2(self) -> float | None:
        """Area of one pixel in mm², or None without spacing."""
        if self.spacing_mm is None:
            return None
        return self.spacing_mm[0] * self.spacing_mm[1]

    @property
    def mean_spacing_mm(self) -> float | None:
        """Geometric mean of row and column spacing, for converting mm scales to pixels."""
        if self.spacing_mm is None:
            return None
        return float(np.sqrt(self.spacing_mm[0] * self.spacing_mm[1]))
