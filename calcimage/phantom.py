"""Synthetic limb radiographs with exact ground truth (the accuracy yardstick).

A phantom is a projection radiograph of a limb segment rendered from a small anatomical
model. The physics is done in the attenuation (log) domain, so overlapping structures add:

- soft tissue of an elliptical cross-section (skin, a subcutaneous fat layer, muscle with
  intermuscular fat planes and a fibre texture averaged through its depth), with a wobbling
  outline and a taper along the limb;
- one or two tubular bones (radius/ulna, tibia/fibula) with a bright cortex, a flared
  metaphysis and an anisotropic trabecular texture in the medulla; bones displace muscle;
- calcinosis of two kinds, **nodules** (round or irregular, 1-12 mm, mottled) and
  **plaques** (curved sheets 10-40 mm long, 1-6 mm wide), with densities from faint to
  bone-like, most in the subcutaneous soft tissue, some projected over bone; every lesion is
  made visible (its signal integrated over its area >= ``min_lesion_cnr`` times the
  background fluctuation at its scale: the Rose criterion);
- a film frame: anode-heel exposure gradient, scatter, collimation borders with a penumbra,
  a lead side marker in a plastic holder, signal-dependent (quantum) plus electronic noise,
  detector blur, a log transform and quantisation to ``bits_stored`` bits.

Every anatomical structure lives in a *world* frame in mm, which is the baseline film's
pixel grid times its spacing. A film is rendered through a pose (film pixel -> world mm), so a
follow-up (:func:`make_followup`) shows the *same* limb rotated, shifted and magnified, with
its lesions grown, shrunk, resolved or new, at another exposure. Lesion footprints are
evaluated analytically on each film's own pixel grid: the truth label of a pixel is the lesion
whose thickness there is > 0 (before blur), so truth areas are the areas on that film.

Generation is deterministic: every random draw comes from ``numpy.random.Generator(PCG64(seed))``
and arithmetic is done in float64 so the quantised values do not depend on SIMD details.
"""

from __future__ import annotations

import datetime as dt
import enum
import gzip
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np

from calcimage.errors import ParameterError
from calcimage.film import Film, FilmMetadata, SpacingSource
from calcimage.io.write import write_dicom, write_png  # re-exported: phantoms write directly
from calcimage.params import require, require_positive, require_range
from calcimage.segment import LesionKind

__all__ = [
    "FilmFormat",
    "FilmOutput",
    "write_truth",
    "read_truth_labels",
    "write_phantom",
    "write_pairs",
    "write_sample_set",
    "random_followup_params",
    "SAMPLE_FILM_PARAMS",
    "ChangeMode",
    "PhantomParams",
    "FollowupParams",
    "LesionSpec",
    "Anatomy",
    "TextureField",
    "PhantomTruth",
    "Phantom",
    "make_phantom",
    "make_followup",
    "MASK_NAMES",
    "write_dicom",
    "write_png",
]

logger = logging.getLogger(__name__)

#: Names of the boolean masks in :attr:`PhantomTruth.masks`.
MASK_NAMES = ("body", "bone", "cortex", "marker", "collimation")

# Linear attenuation coefficients in 1/mm at an effective ~40 keV (extremity technique).
_MU_MUSCLE = 0.027
_MU_FAT = 0.021
_MU_SKIN = 0.030
_MU_CORTEX = 0.13
_MU_MARROW = 0.022  # fatty marrow of the diaphysis
_MU_TRABECULAR = 0.055  # cancellous bone of the metaphysis (bone + marrow mixture)
_MU_LEAD_PATH = 7.0  # total attenuation of the lead letter (transmission ~ 0.1 %)
_MU_HOLDER = 0.08  # attenuation of the marker's plastic holder

#: The lead marker's letters: a 5 x 7 dot-matrix block font (rows top to bottom, 5 bits each,
#: leftmost column = highest bit). Drawn by numpy, not by OpenCV's Hershey font, whose
#: raster and metrics change between OpenCV releases (5.0 -> 5.1 made "L" one pixel wider,
#: and every sample film with it).
_MARKER_FONT: Mapping[str, tuple[int, ...]] = MappingProxyType({
    "A": (0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11), "B": (0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E),
    "C": (0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E), "D": (0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C),
    "E": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F), "F": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10),
    "G": (0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F), "H": (0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11),
    "I": (0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E), "J": (0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C),
    "K": (0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11), "L": (0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F),
    "M": (0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11), "N": (0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11),
    "O": (0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E), "P": (0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10),
    "Q": (0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D), "R": (0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11),
    "S": (0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E), "T": (0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04),
    "U": (0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E), "V": (0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04),
    "W": (0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A), "X": (0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11),
    "Y": (0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04), "Z": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F),
    "0": (0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E), "1": (0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "2": (0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F), "3": (0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E),
    "4": (0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02), "5": (0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E),
    "6": (0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E), "7": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08),
    "8": (0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E), "9": (0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C),
})


def marker_glyphs(text: str, cell_px: int) -> np.ndarray:
    """Bool raster of ``text`` in the marker font, each dot ``cell_px`` pixels square.

    Letters are 5 x 7 dots with one dot of space between them, so the raster is
    ``7 * cell_px`` rows by ``(6 * len(text) - 1) * cell_px`` columns.

    Raises
    ------
    ParameterError
        A character the font does not have (it has A-Z and 0-9).
    """
    if cell_px < 1:
        raise ParameterError(f"marker cell_px={cell_px!r} is invalid: expected an integer >= 1")
    if not text:
        raise ParameterError("parameter marker_text='' is invalid: expected at least one character")
    dots = np.zeros((7, 6 * len(text) - 1), bool)
    for i, ch in enumerate(text):
        rows = _MARKER_FONT.get(ch)
        if rows is None:
            raise ParameterError(
                f"parameter marker_text={text!r} is invalid: {ch!r} is not in the marker font "
                "(upper-case A-Z and 0-9)"
            )
        bits = np.array(rows, np.uint8)[:, None] >> np.arange(4, -1, -1, dtype=np.uint8)
        dots[:, 6 * i:6 * i + 5] = (bits & 1).astype(bool)
    return np.kron(dots, np.ones((cell_px, cell_px), bool))

# Projected texture: a tissue whose attenuation varies by a relative std `h` from one
# independent cell of length `l` to the next, crossed over a path L, adds a projected std of
# h * mu * sqrt(l * L) (L / l cells average out) -- not h * mu * L. Muscle: fibre bundles and
# lobules ~2 mm with +-4 %, which projects to 0.5-1 % of the muscle attenuation over 20-80 mm.
# Cancellous bone: trabeculae and marrow spaces ~0.7 mm, +-60 % of the cancellous excess.
_FIBRE_CELL_MM = 2.0
_FIBRE_HETEROGENEITY = 0.04
_TRABECULAR_CELL_MM = 0.7
_TRABECULAR_HETEROGENEITY = 0.6
#: Densest a lesion may be made to meet the visibility floor (x cortical bone's attenuation).
_MAX_LESION_DENSITY = 1.5
# Displayed value: density D = -ln(I) mapped linearly from [_D_LO, _D_HI] onto the stored range.
_D_LO = -0.7
_D_HI = 5.0
#: Largest linear growth any lesion may undergo in a follow-up; placement keeps room for it.
_MAX_LINEAR_GROWTH = 1.6
#: Clear gap kept between the bounding circles of two lesions, in mm.
_LESION_GAP_MM = 1.0


class ChangeMode(str, enum.Enum):
    """How the lesions of a follow-up differ from those of the film it is made from."""

    #: Same lesions, same sizes: only positioning, exposure and noise change.
    RETEST = "retest"
    #: Lesions grow or shrink (per-lesion randomness around ``area_factor``), some resolve,
    #: some new ones appear.
    EVOLVE = "evolve"


def _require_int(name: str, value: Any, lo: int, hi: int) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi
    require(ok, name, value, f"an integer in [{lo}, {hi}]")


def _require_span(name: str, value: Any, lo: float, hi: float) -> None:
    ok = (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and lo <= value[0] <= value[1] <= hi
    )
    require(ok, name, value, f"a (min, max) pair with {lo} <= min <= max <= {hi}")


@dataclass(frozen=True)
class PhantomParams:
    """Everything :func:`make_phantom` can vary. Sizes in mm, doses in photons/mm².

    Attributes
    ----------
    rows, cols, spacing_mm
        Film grid; the film covers ``rows * spacing_mm`` by ``cols * spacing_mm`` mm.
    bits_stored
        Quantisation depth of the film (10-16 bits).
    monochrome1
        Recorded in the film's metadata; the writers store the film inverted (dark = dense).
        The Film's pixels are always brighter = denser.
    n_nodules, n_plaques
        Number of lesions of each kind to place (fewer when the limb has no room).
    n_bones
        Tubular bones in the limb (0-2).
    fraction_over_bone
        Share of lesions projected over a bone; the rest lie in soft tissue clear of bone.
    limb_width_mm
        (min, max) of the limb's width across the film.
    nodule_diameter_mm, plaque_length_mm, plaque_width_mm
        (min, max) lesion sizes at baseline.
    density
        (min, max) lesion density as a fraction of cortical bone's attenuation (faint .. bone-like).
    faint_fraction
        Share of lesions drawn from the faint end (below the geometric mean of ``density``).
    cluster_fraction
        Share of nodules placed next to an earlier lesion (calcinosis comes in clusters).
    dose_photons_per_mm2
        Photons per mm² reaching the detector without an object (sets quantum noise).
    electronic_noise
        Detector read noise as a fraction of the unattenuated signal.
    blur_mm
        Sigma of the detector's Gaussian point spread, in mm.
    heel
        Relative exposure drop across the film along the rows (anode heel effect).
    scatter_fraction
        Scatter added to the primary beam, relative to the local primary (broad blur).
    marker_text
        Letter(s) of the lead side marker: one to three of A-Z and 0-9, drawn in the phantom's
        own 5 x 7 dot-matrix font (:func:`marker_glyphs`).
    unsharp_amount, unsharp_mm
        Optional vendor-style image processing: unsharp masking of the density image with a
        Gaussian of ``unsharp_mm`` (0 = raw detector image, the default; clinical DR
        presentation images often use 0.5-2). Changes pixels only, never the truth.
    min_lesion_cnr
        Visibility floor (Rose criterion): a lesion's density is raised, where needed, until
        its signal integrated over its area (``truth.signals``) is at least this many times
        the expected background fluctuation at its scale and place (quantum noise +
        anatomical texture, same band-pass), so every lesion is one a radiologist could see.
        Lesions over bone need more density. 0 switches the floor off (stress tests with
        invisible lesions).
    """

    rows: int = 1500
    cols: int = 1200
    spacing_mm: float = 0.15
    bits_stored: int = 12
    monochrome1: bool = False
    n_nodules: int = 9
    n_plaques: int = 3
    n_bones: int = 2
    fraction_over_bone: float = 0.2
    limb_width_mm: tuple[float, float] = (60.0, 85.0)
    nodule_diameter_mm: tuple[float, float] = (1.0, 12.0)
    plaque_length_mm: tuple[float, float] = (10.0, 40.0)
    plaque_width_mm: tuple[float, float] = (1.0, 6.0)
    density: tuple[float, float] = (0.08, 1.0)
    faint_fraction: float = 0.35
    cluster_fraction: float = 0.35
    dose_photons_per_mm2: float = 60000.0
    electronic_noise: float = 0.002
    blur_mm: float = 0.12
    heel: float = 0.15
    scatter_fraction: float = 0.25
    marker_text: str = "L"
    unsharp_amount: float = 0.0
    unsharp_mm: float = 10.0
    min_lesion_cnr: float = 5.0

    def __post_init__(self) -> None:
        _require_int("rows", self.rows, 64, 10000)
        _require_int("cols", self.cols, 64, 10000)
        require_range("spacing_mm", self.spacing_mm, 0.02, 1.0)
        _require_int("bits_stored", self.bits_stored, 10, 16)
        require(isinstance(self.monochrome1, bool), "monochrome1", self.monochrome1, "true or false")
        _require_int("n_nodules", self.n_nodules, 0, 200)
        _require_int("n_plaques", self.n_plaques, 0, 50)
        _require_int("n_bones", self.n_bones, 0, 2)
        require_range("fraction_over_bone", self.fraction_over_bone, 0.0, 1.0)
        _require_span("limb_width_mm", self.limb_width_mm, 20.0, 400.0)
        _require_span("nodule_diameter_mm", self.nodule_diameter_mm, 0.3, 30.0)
        _require_span("plaque_length_mm", self.plaque_length_mm, 3.0, 100.0)
        _require_span("plaque_width_mm", self.plaque_width_mm, 0.3, 20.0)
        _require_span("density", self.density, 0.01, 2.0)
        require_range("faint_fraction", self.faint_fraction, 0.0, 1.0)
        require_range("cluster_fraction", self.cluster_fraction, 0.0, 1.0)
        require_positive("dose_photons_per_mm2", self.dose_photons_per_mm2)
        require_range("electronic_noise", self.electronic_noise, 0.0, 0.1)
        require_range("blur_mm", self.blur_mm, 0.0, 2.0)
        require_range("heel", self.heel, 0.0, 0.5)
        require_range("scatter_fraction", self.scatter_fraction, 0.0, 1.0)
        require_range("unsharp_amount", self.unsharp_amount, 0.0, 5.0)
        require_range("unsharp_mm", self.unsharp_mm, 1.0, 100.0)
        require_range("min_lesion_cnr", self.min_lesion_cnr, 0.0, 20.0)
        require(
            isinstance(self.marker_text, str) and 0 < len(self.marker_text) <= 3
            and all(ch in _MARKER_FONT for ch in self.marker_text),
            "marker_text", self.marker_text,
            "one to three upper-case letters or digits, e.g. 'L'",
        )
        width_mm = self.cols * self.spacing_mm
        require(
            self.limb_width_mm[1] <= 0.8 * width_mm, "limb_width_mm", self.limb_width_mm,
            f"a limb narrower than 80 % of the film width ({0.8 * width_mm:.0f} mm); "
            "use more cols or a larger spacing_mm",
        )


@dataclass(frozen=True)
class FollowupParams:
    """How a follow-up film differs from the film it is made from.

    Attributes
    ----------
    rotation_deg
        In-plane rotation of the limb about the film centre; positive turns it clockwise as
        displayed (rows down, columns right).
    translation_mm
        (row, col) shift of the limb on the film, in mm.
    magnification
        Relative magnification against the baseline (source/object/detector distances
        differ); 1.02 shows everything 2 % larger.
    exposure
        Relative exposure (mAs) against the baseline; lower means noisier and denser-looking.
    change
        RETEST keeps the lesions; EVOLVE grows/shrinks them towards ``area_factor``.
    area_factor
        EVOLVE: target ratio of total lesion area (at baseline magnification) against the
        film the follow-up is made from. Per-lesion factors scatter around it.
    lesion_spread
        EVOLVE: standard deviation of the log of per-lesion area factors.
    resolve_fraction
        EVOLVE: chance that a lesion resolves completely.
    n_new
        EVOLVE: number of new small nodules.
    months
        Months since the baseline (recorded; the sample set uses it for study dates).
    """

    rotation_deg: float = 2.0
    translation_mm: tuple[float, float] = (3.0, -4.0)
    magnification: float = 1.02
    exposure: float = 0.9
    change: ChangeMode = ChangeMode.EVOLVE
    area_factor: float = 1.0
    lesion_spread: float = 0.25
    resolve_fraction: float = 0.1
    n_new: int = 1
    months: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.change, ChangeMode):
            try:
                object.__setattr__(self, "change", ChangeMode(self.change))
            except ValueError:
                choices = ", ".join(repr(m.value) for m in ChangeMode)
                raise ParameterError(
                    f"parameter change={self.change!r} is invalid: expected one of {choices}"
                ) from None
        require_range("rotation_deg", self.rotation_deg, -10.0, 10.0)
        _require_span_any("translation_mm", self.translation_mm, -20.0, 20.0)
        require_range("magnification", self.magnification, 0.9, 1.1)
        require_range("exposure", self.exposure, 0.5, 2.0)
        require_range("area_factor", self.area_factor, 0.0, _MAX_LINEAR_GROWTH**2)
        require_range("lesion_spread", self.lesion_spread, 0.0, 1.0)
        require_range("resolve_fraction", self.resolve_fraction, 0.0, 1.0)
        _require_int("n_new", self.n_new, 0, 50)
        _require_int("months", self.months, 0, 600)


def _require_span_any(name: str, value: Any, lo: float, hi: float) -> None:
    ok = (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and all(lo <= v <= hi for v in value)
    )
    require(ok, name, value, f"a (row, col) pair of numbers in [{lo}, {hi}]")


@dataclass(frozen=True)
class LesionSpec:
    """One lesion in the world frame (mm). ``scale`` and ``fade`` carry follow-up changes."""

    lesion_id: int
    kind: LesionKind
    centre_mm: tuple[float, float]  # (row, col) in the world frame
    angle_rad: float  # orientation of the lesion's long axis against the row axis
    size_mm: float  # nodule: radius; plaque: half-length
    width_mm: float  # nodule: aspect ratio (minor/major); plaque: half-width
    curvature_per_mm: float  # plaques only
    thickness_mm: float  # path length through the lesion at its thickest
    delta_mu_per_mm: float  # attenuation above the soft tissue it displaces
    harmonics: tuple[tuple[float, float], ...]  # outline wobble (amplitude, phase) for k=2..
    mottle: tuple[tuple[float, float, float], ...]  # internal texture (k_row, k_col, phase)
    mottle_amplitude: float
    over_bone: bool
    scale: float = 1.0
    fade: float = 1.0

    @property
    def bounding_radius_mm(self) -> float:
        """Radius of a circle about ``centre_mm`` that holds the whole footprint."""
        wobble = 1.0 + sum(abs(a) for a, _ in self.harmonics)
        if self.kind is LesionKind.NODULE:
            return self.size_mm * self.scale * wobble
        half_len = self.size_mm * self.scale
        bow = abs(self.curvature_per_mm) * half_len**2 / self.scale
        return math.hypot(half_len, self.width_mm * self.scale * wobble + bow)

    @property
    def peak_contrast(self) -> float:
        """Largest added attenuation (log units) through the lesion."""
        return self.delta_mu_per_mm * self.thickness_mm * self.fade * (1.0 + self.mottle_amplitude)


@dataclass(frozen=True, eq=False)
class TextureField:
    """A texture sampled on a square grid in the world frame: ``values[i, j]`` is at world
    ``(origin_mm[0] + i * spacing_mm, origin_mm[1] + j * spacing_mm)``; beyond it, reflected."""

    values: np.ndarray  # float64 on a 2^-16 grid
    spacing_mm: float
    origin_mm: tuple[float, float]


@dataclass(frozen=True, eq=False)
class Anatomy:
    """The limb, in the world frame (mm): soft tissue, bones and texture fields."""

    axis_origin_mm: tuple[float, float]  # a point on the limb axis (row, col)
    axis_angle_rad: float  # limb axis against the row direction
    u_table_mm: np.ndarray  # positions along the axis where the profiles below are tabulated
    half_width_mm: np.ndarray  # limb half-width across the film
    depth_ratio: float  # half-depth along the beam / half-width
    fat_mm: np.ndarray  # subcutaneous fat thickness
    bone_offset_mm: np.ndarray  # (n_bones, len(u_table)) bone axis offset across the limb
    bone_radius_mm: np.ndarray  # (n_bones, len(u_table)) outer radius
    cortex_mm: np.ndarray  # (n_bones, len(u_table)) cortical thickness
    trabecular: np.ndarray  # (n_bones, len(u_table)) share of cancellous bone in the medulla
    bone_texture: TextureField  # in [-1, 1], trabecular pattern, over the bones' band
    tissue_texture: TextureField  # ~N(0, 1), muscle fibre/lobule pattern, over the limb's band
    # Intermuscular fat planes running along the limb: (n, len(u_table)) offset across the
    # limb, and per plane its half-width and the path (mm) along the beam where fat replaces
    # muscle (the plane seen near edge-on).
    plane_offset_mm: np.ndarray = field(default_factory=lambda: np.zeros((0, 1)))
    plane_width_mm: tuple[float, ...] = ()
    plane_path_mm: tuple[float, ...] = ()

    @property
    def n_bones(self) -> int:
        """Number of tubular bones."""
        return int(self.bone_offset_mm.shape[0])


@dataclass(frozen=True, eq=False)
class PhantomTruth:
    """What is really on a phantom film.

    Attributes
    ----------
    labels
        int32 (rows, cols): 0 = no lesion, k = lesion k (1-based index into the tuples below);
        a pixel is labelled where the lesion's thickness is > 0 (before detector blur).
    kinds, areas_mm2, centroids, lesion_ids, contrasts, over_bone
        Per lesion k (index k - 1): kind, area on this film (pixel count × pixel area),
        footprint centroid (row, col) in px, stable identity across baseline and follow-ups,
        peak added attenuation (log units; ~0.02 is faint, > 0.5 bone-like) and whether the
        lesion projects over bone.
    background_std
        Per lesion: expected background fluctuation at its scale and place on this film (log
        units; quantum noise + anatomical texture, see ``_background_std``).
    signals
        Per lesion: its added attenuation seen through the same band-pass (log units, about
        half of ``contrasts``: the mean over the lesion's area, less its surround; see
        ``_lesion_signal``). ``cnr`` is ``signals / background_std``, Rose's signal-to-noise
        ratio; with ``min_lesion_cnr`` every lesion has ``cnr >= min_lesion_cnr`` on the film
        where it first appears.
    total_area_mm2
        Sum of ``areas_mm2``.
    masks
        Boolean (rows, cols) masks: ``body`` (soft tissue present), ``bone`` (bone
        projection), ``cortex`` (cortical wall), ``marker`` (lead letter), ``collimation``
        (outside the exposed field).
    magnification
        Magnification against the baseline (1.0 on the baseline).
    transform
        float64 (2, 3) matrix mapping this film's (row, col, 1) onto the baseline's (row, col);
        the identity on the baseline.
    baseline_total_area_mm2
        Total lesion area on the baseline film of this series.
    baseline_areas_mm2
        Lesion id -> area on the baseline film (for per-lesion truth of a follow-up).
    true_change_pct
        Change of total area against the baseline, at the baseline's magnification
        (follow-up areas divided by ``magnification**2``); 0.0 on the baseline.
    resolved_ids, new_ids
        Baseline lesions absent here; lesions absent at baseline.
    truncated_ids
        Lesions cut by the collimation or the film's edge: partly (their area is the visible
        part) or wholly (absent from the labels, and not counted as resolved). Placement keeps
        this empty for follow-ups within ±6°, ±10 mm and ±3 %.
    """

    labels: np.ndarray
    kinds: tuple[LesionKind, ...]
    areas_mm2: tuple[float, ...]
    centroids: tuple[tuple[float, float], ...]
    total_area_mm2: float
    lesion_ids: tuple[int, ...]
    contrasts: tuple[float, ...]
    over_bone: tuple[bool, ...]
    masks: Mapping[str, np.ndarray]
    background_std: tuple[float, ...] = ()
    signals: tuple[float, ...] = ()
    magnification: float = 1.0
    transform: np.ndarray = field(default_factory=lambda: np.eye(2, 3))
    baseline_total_area_mm2: float = 0.0
    baseline_areas_mm2: Mapping[int, float] = field(default_factory=dict)
    true_change_pct: float = 0.0
    resolved_ids: tuple[int, ...] = ()
    new_ids: tuple[int, ...] = ()
    truncated_ids: tuple[int, ...] = ()

    @property
    def n_lesions(self) -> int:
        """Number of lesions on this film."""
        return len(self.kinds)

    @property
    def cnr(self) -> tuple[float, ...]:
        """Per lesion: ``signals / background_std`` (inf where the background is 0)."""
        return tuple(c / b if b > 0 else math.inf for c, b in zip(self.signals, self.background_std))

    @property
    def lesion_mask(self) -> np.ndarray:
        """Boolean union of all lesion footprints."""
        return self.labels > 0

    @property
    def area_mm2_at_baseline_magnification(self) -> float:
        """Total area divided by ``magnification**2``."""
        return self.total_area_mm2 / self.magnification**2

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no arrays): totals and one entry per lesion."""
        return {
            "lesion_count": self.n_lesions,
            "total_area_mm2": round(self.total_area_mm2, 6),
            "total_area_px": int(np.count_nonzero(self.labels)),
            "magnification": self.magnification,
            "transform": [[round(float(v), 12) for v in row] for row in self.transform],
            "baseline_total_area_mm2": round(self.baseline_total_area_mm2, 6),
            "true_change_pct": round(self.true_change_pct, 6),
            "resolved_ids": list(self.resolved_ids),
            "new_ids": list(self.new_ids),
            "truncated_ids": list(self.truncated_ids),
            "lesions": [
                {
                    "label": k + 1,
                    "lesion_id": self.lesion_ids[k],
                    "kind": self.kinds[k].value,
                    "area_mm2": round(self.areas_mm2[k], 6),
                    "area_px": int(round(self.areas_mm2[k] / self._pixel_area)) if self._pixel_area else 0,
                    "centroid_row": round(self.centroids[k][0], 4),
                    "centroid_col": round(self.centroids[k][1], 4),
                    "contrast": round(self.contrasts[k], 6),
                    "background_std": self.background_std[k] if self.background_std else None,
                    "signal": self.signals[k] if self.signals else None,
                    "cnr": round(self.cnr[k], 3) if self.background_std and self.signals else None,
                    "over_bone": self.over_bone[k],
                    "baseline_area_mm2": (
                        round(self.baseline_areas_mm2[self.lesion_ids[k]], 6)
                        if self.lesion_ids[k] in self.baseline_areas_mm2 else None
                    ),
                }
                for k in range(self.n_lesions)
            ],
        }

    @property
    def _pixel_area(self) -> float:
        px = int(np.count_nonzero(self.labels))
        return self.total_area_mm2 / px if px else 0.0


@dataclass(frozen=True, eq=False)
class Phantom:
    """A rendered film, its truth and the model it was rendered from.

    ``pose`` maps this film's (row, col, 1) to world mm; ``baseline`` refers to the first film
    of the series (None on the baseline itself).
    """

    film: Film
    truth: PhantomTruth
    anatomy: Anatomy
    lesions: tuple[LesionSpec, ...]
    pose: np.ndarray
    params: PhantomParams
    seed: int
    followup: FollowupParams | None = None
    next_lesion_id: int = 1
    baseline_truth: PhantomTruth | None = None


# --------------------------------------------------------------------------- geometry


def _rng(seed: int) -> np.random.Generator:
    require(
        isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0, "seed", seed,
        "a non-negative integer",
    )
    return np.random.Generator(np.random.PCG64(seed))


def _smooth_profile(rng: np.random.Generator, n: int, step_mm: float, corr_mm: float) -> np.ndarray:
    """A smooth random 1-D profile with unit standard deviation and correlation ~corr_mm."""
    white = rng.standard_normal(n + 64)
    sigma = max(corr_mm / step_mm, 0.5)
    radius = int(3 * sigma) + 1
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    smooth = np.convolve(white, kernel / kernel.sum(), mode="same")[32 : 32 + n]
    std = float(smooth.std())
    return smooth / std if std > 0 else smooth


def _broad_blur(
    image: np.ndarray, sigma_px: tuple[float, float], weight: np.ndarray | None = None
) -> np.ndarray:
    """Gaussian blur with large (row, col) sigmas, done on a shrunken copy for speed.

    With ``weight`` (a mask), blurs ``image * weight`` with the product taken on the
    shrunken grid.
    """
    factor = max(int(min(sigma_px) // 3), 1)
    size = (max(image.shape[1] // factor, 1), max(image.shape[0] // factor, 1))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if weight is not None:
        small *= cv2.resize(weight.astype(np.float64), size, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(
        small, (0, 0), sigmaX=sigma_px[1] / factor, sigmaY=sigma_px[0] / factor,
        borderType=cv2.BORDER_REFLECT,
    )
    return cv2.resize(small, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)


def _texture(
    rng: np.random.Generator, shape: tuple[int, int], spacing_mm: float,
    fine_mm: tuple[float, float], coarse_mm: tuple[float, float],
) -> np.ndarray:
    """Band-pass filtered noise (float64 on a 2^-16 grid, unit std), anisotropic by (row, col)."""
    noise = rng.standard_normal(shape)
    fine = cv2.GaussianBlur(
        noise, (0, 0), sigmaX=fine_mm[1] / spacing_mm, sigmaY=fine_mm[0] / spacing_mm,
        borderType=cv2.BORDER_REFLECT,
    )
    del noise
    fine -= _broad_blur(fine, (coarse_mm[0] / spacing_mm, coarse_mm[1] / spacing_mm))
    std = math.sqrt(float(np.mean(fine[::7, ::7] ** 2)))
    fine *= 1.0 / std if std > 0 else 0.0
    return _snap(fine)


def _snap(values: np.ndarray) -> np.ndarray:
    """Round float64 values to a 2^-16 grid, in place.

    Last-bit differences between CPUs (SIMD exp/tanh, FMA in filters) vanish here, and
    bilinear interpolation of snapped values with OpenCV's 1/32-pixel weights is then exact
    in float64, so rendered films are byte-identical on any machine.
    """
    values *= 65536.0
    np.rint(values, out=values)
    values *= 1.0 / 65536.0
    return values


def _make_anatomy(rng: np.random.Generator, p: PhantomParams) -> Anatomy:
    height_mm = p.rows * p.spacing_mm
    width_mm = p.cols * p.spacing_mm
    centre = (height_mm / 2.0, width_mm / 2.0)
    width = rng.uniform(*p.limb_width_mm)
    room = max(width_mm / 2.0 - width / 2.0 - 25.0, 0.0)
    offset_col = rng.uniform(-0.5, 0.5) * room
    angle = math.radians(rng.uniform(-5.0, 5.0))
    # Profiles along the axis, tabulated over more than the film diagonal (follow-ups move).
    reach = math.hypot(height_mm, width_mm) / 2.0 + 60.0
    step = 1.0
    u = np.arange(-reach, reach + step, step)
    taper = rng.uniform(-0.12, 0.12) * (u / height_mm)
    half_width = 0.5 * width * (1.0 + taper + 0.02 * _smooth_profile(rng, u.size, step, 25.0))
    fat = rng.uniform(3.0, 7.0) * (1.0 + 0.3 * _smooth_profile(rng, u.size, step, 30.0))
    fat = np.clip(fat, 1.5, None)

    n = p.n_bones
    offsets = np.zeros((n, u.size))
    radii = np.zeros((n, u.size))
    cortex = np.zeros((n, u.size))
    trab = np.zeros((n, u.size))
    if n:
        # A flared metaphysis near one end of the film; a pair of bones flares at the same end.
        end_sign = float(rng.choice([-1.0, 1.0]))
        end_u = end_sign * rng.uniform(0.25, 0.45) * height_mm
        towards_end = 1.0 / (1.0 + np.exp(-(u - end_u) * end_sign / rng.uniform(6.0, 12.0)))
        if n == 1:
            base_radii = [rng.uniform(0.16, 0.22) * width]
        else:
            r1 = rng.uniform(0.11, 0.14) * width
            base_radii = [r1, r1 * rng.uniform(0.6, 0.85)]
        for b, radius in enumerate(base_radii):
            flare = rng.uniform(0.2, 0.45)
            radii[b] = radius * (1.0 + flare * towards_end) * (
                1.0 + 0.02 * _smooth_profile(rng, u.size, step, 20.0)
            )
            wall = rng.uniform(0.22, 0.32) * radius
            cortex[b] = wall * (1.0 - 0.75 * towards_end) + 0.3
            trab[b] = 0.15 + 0.85 * towards_end
        drift = rng.uniform(-0.01, 0.01) * u + 0.01 * width * _smooth_profile(rng, u.size, step, 40.0)
        if n == 1:
            offsets[0] = rng.uniform(-0.08, 0.08) * width + drift
        else:
            # A pair (radius/ulna, tibia/fibula) side by side with an interosseous gap that
            # narrows towards the metaphysis but never closes.
            gap = rng.uniform(0.05, 0.12) * width * (1.0 + 0.3 * _smooth_profile(rng, u.size, step, 30.0))
            gap = np.clip(gap * (1.0 - 0.5 * towards_end), 1.0, None)
            lateral = float(rng.choice([-1.0, 1.0]))
            centre_line = rng.uniform(-0.04, 0.04) * width + drift
            offsets[0] = centre_line - lateral * (radii[1] + gap / 2.0)
            offsets[1] = centre_line + lateral * (radii[0] + gap / 2.0)

    # Texture fields cover the band of the film the limb (or the bones) can occupy, plus a
    # margin; follow-ups that look further out see them reflected. Trabecular texture needs a
    # fine grid (<= 0.12 mm: features 0.25-1 mm); the softer muscle texture is sampled at 0.3 mm.
    origin = (centre[0], centre[1] + offset_col)
    reach_u = height_mm / 2.0 + 30.0

    def band(lo_v: float, hi_v: float, step_mm: float, fine_mm: tuple[float, float], coarse_mm: tuple[float, float]) -> TextureField:
        cols = [origin[1] + uu * math.sin(angle) + vv * math.cos(angle) for uu in (-reach_u, reach_u) for vv in (lo_v, hi_v)]
        c0, c1 = min(cols) - 20.0, max(cols) + 20.0
        r0, r1 = -20.0, height_mm + 20.0
        shape = (int(math.ceil((r1 - r0) / step_mm)) + 1, int(math.ceil((c1 - c0) / step_mm)) + 1)
        return TextureField(_texture(rng, shape, step_mm, fine_mm, coarse_mm), step_mm, (r0, c0))

    if n:
        lo_v = float((offsets - radii).min())
        hi_v = float((offsets + radii).max())
    else:
        lo_v = hi_v = 0.0
    bone_tex = band(lo_v, hi_v, min(max(p.spacing_mm, 0.08), 0.12), (0.22, 0.11), (1.0, 0.6))
    bone_tex = replace(bone_tex, values=_snap(np.tanh(1.3 * bone_tex.values)))
    half_max = float(half_width.max())
    tissue_tex = band(-half_max, half_max, 0.3, (1.2, 0.5), (6.0, 3.0))
    # Two to four intermuscular fat planes along the limb, inside the muscle.
    n_planes = int(rng.integers(2, 5))
    planes = np.zeros((n_planes, u.size))
    for k in range(n_planes):
        planes[k] = (rng.uniform(-0.65, 0.65) + 0.04 * _smooth_profile(rng, u.size, step, 40.0)) * half_width
    plane_width = tuple(float(w) for w in rng.uniform(0.6, 1.5, size=n_planes))
    plane_path = tuple(float(w) for w in rng.uniform(4.0, 12.0, size=n_planes))
    # Profiles are snapped too, so their float32 copies in the renderer are exact.
    return Anatomy(
        axis_origin_mm=origin,
        axis_angle_rad=angle,
        u_table_mm=u,
        half_width_mm=_snap(half_width),
        depth_ratio=float(rng.uniform(0.75, 0.95)),
        fat_mm=_snap(fat),
        bone_offset_mm=_snap(offsets),
        bone_radius_mm=_snap(radii),
        cortex_mm=_snap(cortex),
        trabecular=_snap(trab),
        bone_texture=bone_tex,
        tissue_texture=tissue_tex,
        plane_offset_mm=_snap(planes),
        plane_width_mm=plane_width,
        plane_path_mm=plane_path,
    )


def _limb_frame(anatomy: Anatomy, world_row: np.ndarray, world_col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(u along the axis, v across it) in mm for world positions."""
    ca, sa = math.cos(anatomy.axis_angle_rad), math.sin(anatomy.axis_angle_rad)
    dr = world_row - anatomy.axis_origin_mm[0]
    dc = world_col - anatomy.axis_origin_mm[1]
    return dr * ca + dc * sa, -dr * sa + dc * ca


def _interp(anatomy: Anatomy, u: np.ndarray | float, table: np.ndarray) -> np.ndarray:
    return np.interp(u, anatomy.u_table_mm, table)


class _Lookup:
    """Linear interpolation of several u-profiles at the same positions (float32, fast)."""

    def __init__(self, anatomy: Anatomy, u: np.ndarray) -> None:
        table_u = anatomy.u_table_mm
        step = float(table_u[1] - table_u[0])
        pos = (u - np.float32(table_u[0])) * np.float32(1.0 / step)
        np.clip(pos, 0.0, np.float32(table_u.size - 1.001), out=pos)
        self.index = pos.astype(np.int32)
        self.frac = pos - self.index
        self.frac = self.frac.astype(np.float32, copy=False)

    def window(self, cols: slice) -> "_Lookup":
        """The same lookup restricted to a range of columns."""
        sub = object.__new__(_Lookup)
        sub.index = self.index[:, cols]
        sub.frac = self.frac[:, cols]
        return sub

    def __call__(self, table: np.ndarray) -> np.ndarray:
        t = np.asarray(table, dtype=np.float32)
        dt = np.diff(t, append=t[-1:])
        out = np.take(t, self.index)
        out += self.frac * np.take(dt, self.index)
        return out


def _col_window(affine: np.ndarray, lo: float, hi: float, shape: tuple[int, int]) -> tuple[int, int]:
    """Columns [c0, c1) where ``affine . (row, col, 1)`` can fall within [lo, hi] on some row."""
    a_r, a_c, a_0 = (float(x) for x in affine)
    rows, cols = shape
    if abs(a_c) < 1e-9:
        return 0, cols
    ends = [(t - a_0 - a_r * r) / a_c for t in (lo, hi) for r in (0.0, rows - 1.0)]
    c0 = max(int(math.floor(min(ends))) - 2, 0)
    c1 = min(int(math.ceil(max(ends))) + 3, cols)
    return c0, max(c1, c0)


# --------------------------------------------------------------------------- lesions


def _new_lesion(
    rng: np.random.Generator, p: PhantomParams, kind: LesionKind, lesion_id: int,
    limb_angle: float, over_bone: bool, *, small: bool = False,
) -> LesionSpec:
    # About a third faint (log-uniform below the geometric mid-range), the rest dense.
    dens_lo, dens_hi = p.density
    mid = math.sqrt(dens_lo * dens_hi)
    if rng.uniform() < p.faint_fraction:
        density = math.exp(rng.uniform(math.log(dens_lo), math.log(mid)))
    else:
        density = rng.uniform(mid, dens_hi)
    delta_mu = density * (_MU_CORTEX - _MU_MUSCLE)
    irregular = bool(rng.uniform() < 0.5)
    if kind is LesionKind.NODULE:
        lo, hi = p.nodule_diameter_mm
        if small:
            hi = min(hi, max(lo, 3.0))
        diameter = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        size = diameter / 2.0
        width = rng.uniform(0.65, 1.0)  # aspect ratio
        angle = rng.uniform(0.0, math.pi)
        amp = 0.14 if irregular else 0.03
        harmonics = tuple(
            (float(amp * rng.standard_normal() / k), float(rng.uniform(0, 2 * math.pi)))
            for k in range(2, 7)
        )
        thickness = diameter * rng.uniform(0.6, 1.0)
        curvature = 0.0
        mottle_freq = 2.0 * math.pi / max(0.8, diameter / 3.0)
    else:
        length = rng.uniform(*p.plaque_length_mm)
        size = length / 2.0
        width = rng.uniform(*p.plaque_width_mm) / 2.0
        angle = limb_angle + math.radians(rng.uniform(-8.0, 8.0))  # along the fascia
        harmonics = tuple(
            (float(0.15 * rng.standard_normal() / k), float(rng.uniform(0, 2 * math.pi)))
            for k in range(1, 6)
        )
        thickness = rng.uniform(2.0, 6.0)  # path along the beam through the sheet
        curvature = rng.uniform(-1.0, 1.0) * 0.3 / max(length, 1.0)
        mottle_freq = 2.0 * math.pi / 2.5
    # Internal texture: six plane waves of random direction and wavelength (0.6-1.6 x nominal).
    mottle = tuple(
        (
            float(mottle_freq * f * math.cos(t)),
            float(mottle_freq * f * math.sin(t)),
            float(rng.uniform(0, 2 * math.pi)),
        )
        for t, f in zip(rng.uniform(0, math.pi, size=6), rng.uniform(0.6, 1.6, size=6))
    )
    return LesionSpec(
        lesion_id=lesion_id,
        kind=kind,
        centre_mm=(0.0, 0.0),
        angle_rad=float(angle),
        size_mm=float(size),
        width_mm=float(width),
        curvature_per_mm=float(curvature),
        thickness_mm=float(thickness),
        delta_mu_per_mm=float(delta_mu),
        harmonics=harmonics,
        mottle=mottle,
        mottle_amplitude=float(rng.uniform(0.15, 0.35) if irregular else rng.uniform(0.0, 0.1)),
        over_bone=over_bone,
    )


def _discs(lesion: LesionSpec, scale: float) -> np.ndarray:
    """(n, 3) discs (row, col, radius) in world mm covering the lesion at linear ``scale``."""
    wobble = 1.0 + sum(abs(a) for a, _ in lesion.harmonics)
    if lesion.kind is LesionKind.NODULE:
        return np.array([[lesion.centre_mm[0], lesion.centre_mm[1], lesion.size_mm * scale * wobble]])
    half_len = lesion.size_mm * scale
    radius = lesion.width_mm * scale * wobble
    n = int(min(max(math.ceil(2.0 * half_len / max(radius, 0.2)) + 1, 3), 60))
    along = np.linspace(-half_len, half_len, n)
    across = lesion.curvature_per_mm * along**2 / scale
    ca, sa = math.cos(lesion.angle_rad), math.sin(lesion.angle_rad)
    rows = lesion.centre_mm[0] + along * ca - across * sa
    cols = lesion.centre_mm[1] + along * sa + across * ca
    # Neighbouring discs are at most `radius` apart along the axis, so they cover the sheet.
    return np.stack([rows, cols, np.full(n, radius * 1.12)], axis=1)


def _fits(
    anatomy: Anatomy, lesion: LesionSpec, placed: list[LesionSpec],
    field_mm: tuple[float, float, float, float],
) -> bool:
    """Whether ``lesion`` (grown to the maximum) stays in the body/field and clear of others."""
    discs = _discs(lesion, _MAX_LINEAR_GROWTH)
    r, c, rad = discs[:, 0], discs[:, 1], discs[:, 2]
    r0, r1, c0, c1 = field_mm
    if (r - rad < r0).any() or (r + rad > r1).any() or (c - rad < c0).any() or (c + rad > c1).any():
        return False
    u, v = _limb_frame(anatomy, r, c)
    half = _interp(anatomy, u, anatomy.half_width_mm)
    if (np.abs(v) + rad > half - 0.5).any():
        return False  # the lesion stays inside the body even when grown
    if not lesion.over_bone:
        for b in range(anatomy.n_bones):
            off = _interp(anatomy, u, anatomy.bone_offset_mm[b])
            ro = _interp(anatomy, u, anatomy.bone_radius_mm[b])
            if (np.abs(v - off) < ro + rad + 0.5).any():
                return False
    for other in placed:
        od = _discs(other, max(_MAX_LINEAR_GROWTH, other.scale))
        gap = np.hypot(r[:, None] - od[None, :, 0], c[:, None] - od[None, :, 1])
        if (gap - rad[:, None] - od[None, :, 2] < _LESION_GAP_MM).any():
            return False
    return True


def _place_lesion(
    rng: np.random.Generator, anatomy: Anatomy, lesion: LesionSpec,
    placed: list[LesionSpec], field_mm: tuple[float, float, float, float],
    cluster_fraction: float = 0.0,
) -> LesionSpec | None:
    """Find a centre for ``lesion`` in subcutaneous soft tissue (or over bone), or None."""
    r0, r1, _, _ = field_mm
    ca, sa = math.cos(anatomy.axis_angle_rad), math.sin(anatomy.axis_angle_rad)
    reach = float(_discs(replace(lesion, angle_rad=0.0, centre_mm=(0.0, 0.0)), _MAX_LINEAR_GROWTH)[:, 2].max())
    cluster = lesion.kind is LesionKind.NODULE and bool(placed) and rng.uniform() < cluster_fraction
    for attempt in range(150):
        if cluster and attempt < 40:
            # Next to an earlier lesion, just clear of it even when both have grown.
            near = placed[int(rng.integers(len(placed)))]
            d = near.bounding_radius_mm * max(_MAX_LINEAR_GROWTH / near.scale, 1.0) + reach
            d += _LESION_GAP_MM + rng.uniform(0.2, 4.0)
            phi = rng.uniform(0.0, 2.0 * math.pi)
            centre = (near.centre_mm[0] + d * math.cos(phi), near.centre_mm[1] + d * math.sin(phi))
            candidate = replace(lesion, centre_mm=(float(centre[0]), float(centre[1])))
            if _fits(anatomy, candidate, placed, field_mm):
                return candidate
            continue
        row = rng.uniform(r0, r1)
        u = (row - anatomy.axis_origin_mm[0]) / ca
        half = float(_interp(anatomy, u, anatomy.half_width_mm))
        if lesion.over_bone and anatomy.n_bones:
            b = int(rng.integers(anatomy.n_bones))
            off = float(_interp(anatomy, u, anatomy.bone_offset_mm[b]))
            rad = float(_interp(anatomy, u, anatomy.bone_radius_mm[b]))
            v = off + rng.uniform(-0.8, 0.8) * rad
        else:
            fat = float(_interp(anatomy, u, anatomy.fat_mm))
            # Mostly subcutaneous: within a few fat thicknesses of the skin, either side.
            depth = reach + 0.5 + rng.exponential(1.2 * fat)
            v = (half - depth) * float(rng.choice([-1.0, 1.0]))
        centre = (
            anatomy.axis_origin_mm[0] + u * ca - v * sa,
            anatomy.axis_origin_mm[1] + u * sa + v * ca,
        )
        candidate = replace(lesion, centre_mm=(float(centre[0]), float(centre[1])))
        if _fits(anatomy, candidate, placed, field_mm):
            return candidate
    return None


def _lesion_patch(
    lesion: LesionSpec, pose: np.ndarray, inv_pose: np.ndarray
) -> tuple[int, int, np.ndarray, np.ndarray] | None:
    """Footprint and added attenuation of one lesion on a film's pixel grid (float64).

    Returns the patch's first (row, col) -- possibly outside the film -- the footprint and
    the attenuation, or None when the lesion covers no pixel centre at all.
    """
    mm_per_px = math.sqrt(abs(np.linalg.det(pose[:, :2])))
    centre_px = inv_pose @ np.array([lesion.centre_mm[0], lesion.centre_mm[1], 1.0])
    radius_px = lesion.bounding_radius_mm / mm_per_px + 2.0
    r0 = int(math.floor(centre_px[0] - radius_px))
    r1 = int(math.ceil(centre_px[0] + radius_px)) + 1
    c0 = int(math.floor(centre_px[1] - radius_px))
    c1 = int(math.ceil(centre_px[1] + radius_px)) + 1
    rows = np.arange(r0, r1, dtype=np.float64)[:, None]
    cols = np.arange(c0, c1, dtype=np.float64)[None, :]
    wr = pose[0, 0] * rows + pose[0, 1] * cols + (pose[0, 2] - lesion.centre_mm[0])
    wc = pose[1, 0] * rows + pose[1, 1] * cols + (pose[1, 2] - lesion.centre_mm[1])
    ca, sa = math.cos(lesion.angle_rad), math.sin(lesion.angle_rad)
    along = wr * ca + wc * sa  # mm along the lesion's long axis
    across = -wr * sa + wc * ca
    s = lesion.scale
    if lesion.kind is LesionKind.NODULE:
        rho2 = along**2 + (across / lesion.width_mm) ** 2
        theta = np.arctan2(across, along)
        outline = np.ones_like(theta)
        for k, (amp, phase) in enumerate(lesion.harmonics, start=2):
            outline += amp * np.cos(k * theta + phase)
        outline *= lesion.size_mm * s
        frac = 1.0 - rho2 / outline**2
    else:
        half_len = lesion.size_mm * s
        t = along / half_len
        bent = across - lesion.curvature_per_mm * along**2 / s  # the bow scales with the plaque
        wobble = np.ones_like(t)
        for k, (amp, phase) in enumerate(lesion.harmonics, start=1):
            wobble += amp * np.cos(k * math.pi * t + phase)
        half_w = lesion.width_mm * s * wobble * np.sqrt(np.clip(1.0 - t**4, 0.0, None))
        safe = np.where(half_w > 0, half_w, 1.0)
        frac = np.where(half_w > 0, 1.0 - (bent / safe) ** 2, -1.0)
    inside = frac > 0.0
    if not inside.any():
        return None
    thickness = lesion.thickness_mm * math.sqrt(s) * np.sqrt(np.clip(frac, 0.0, None))
    mottle = np.zeros_like(thickness)
    for k_r, k_c, phase in lesion.mottle:
        mottle += np.cos((k_r * wr + k_c * wc) / s + phase)
    mottle = np.clip(1.0 + lesion.mottle_amplitude * mottle / math.sqrt(len(lesion.mottle) / 2.0), 0.3, None)
    attenuation = lesion.delta_mu_per_mm * lesion.fade * thickness * mottle
    return r0, c0, inside, attenuation


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class _Shot:
    """What the radiographer sets anew for every exposure, in film coordinates."""

    exposure: float
    rows_inset_mm: tuple[float, float]  # collimation inset from the top and bottom edges
    side_margin_mm: tuple[float, float]  # open field left and right of the limb
    field_angle_rad: float
    marker_bottom: bool
    marker_jitter: tuple[float, float]


def _draw_shot(rng: np.random.Generator, exposure: float) -> _Shot:
    wide = float(rng.uniform(24.0, 36.0))  # room for the marker on one side
    narrow = float(rng.uniform(8.0, 25.0))
    marker_left = bool(rng.uniform() < 0.5)
    return _Shot(
        exposure=exposure,
        rows_inset_mm=(float(rng.uniform(3.0, 9.0)), float(rng.uniform(3.0, 9.0))),
        side_margin_mm=(wide, narrow) if marker_left else (narrow, wide),
        field_angle_rad=math.radians(rng.uniform(-1.5, 1.5)),
        marker_bottom=bool(rng.uniform() < 0.5),
        marker_jitter=(float(rng.uniform(0, 1)), float(rng.uniform(0, 1))),
    )


def _field_distance(
    shot: _Shot, shape: tuple[int, int], spacing_mm: float, body: np.ndarray
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Signed distance (px) to the collimated field's border (> 0 inside) and its insets."""
    rows, cols = shape
    body_cols = np.flatnonzero(body.any(axis=0))
    lo, hi = (int(body_cols[0]), int(body_cols[-1])) if body_cols.size else (cols // 2, cols // 2)
    edge = 3.0 / spacing_mm
    top = shot.rows_inset_mm[0] / spacing_mm
    bottom = shot.rows_inset_mm[1] / spacing_mm
    left = max(lo - shot.side_margin_mm[0] / spacing_mm, edge)
    right = max(cols - 1 - hi - shot.side_margin_mm[1] / spacing_mm, edge)
    cr, cc = (rows - 1) / 2.0, (cols - 1) / 2.0
    ca, sa = math.cos(shot.field_angle_rad), math.sin(shot.field_angle_rad)
    r = np.arange(rows, dtype=np.float32)[:, None] - np.float32(cr)
    c = np.arange(cols, dtype=np.float32)[None, :] - np.float32(cc)
    along = r * np.float32(ca) + c * np.float32(sa)
    dist = along + np.float32(cr - top)
    np.subtract(np.float32(cr - bottom), along, out=along)
    np.minimum(dist, along, out=dist)
    along = c * np.float32(ca) - r * np.float32(sa)
    np.minimum(dist, along + np.float32(cc - left), out=dist)
    np.subtract(np.float32(cc - right), along, out=along)
    np.minimum(dist, along, out=dist)
    return dist, (top, bottom, left, right)


def _draw_marker(
    p: PhantomParams, shot: _Shot, shape: tuple[int, int], body: np.ndarray,
    field_dist: np.ndarray, insets: tuple[float, float, float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Lead letter mask and plastic-holder mask, in the wide side of the field."""
    rows, cols = shape
    s = p.spacing_mm
    # ~9 mm letters (7 dots of ~1.3 mm, the stroke width) on a holder 2 mm wider all round.
    glyphs = marker_glyphs(p.marker_text, max(int(round(9.0 / 7.0 / s)), 1))
    pad = max(int(round(2.0 / s)), 2)
    patch = np.pad(glyphs, pad)
    ph, pw = patch.shape
    letter = np.zeros(shape, bool)
    holder = np.zeros(shape, bool)
    edge = max(int(round(5.0 / s)), 4)
    jitter = max(int(round(8.0 / s)), 1)
    top_in, bottom_in, left_in, right_in = (int(math.ceil(v)) for v in insets)
    left_side = shot.side_margin_mm[0] > shot.side_margin_mm[1]
    candidates = []
    for bottom in (shot.marker_bottom, not shot.marker_bottom):
        for step in range(0, rows, max(ph // 2, 1)):
            jr = int(shot.marker_jitter[0] * jitter) + step
            top = rows - bottom_in - edge - jr - ph if bottom else top_in + edge + jr
            jc = int(shot.marker_jitter[1] * edge)
            left = left_in + edge + jc if left_side else cols - right_in - edge - jc - pw
            candidates.append((top, left))
    for top, left in candidates:
        if top < 0 or left < 0 or top + ph > rows or left + pw > cols:
            continue
        window = (slice(top, top + ph), slice(left, left + pw))
        if body[window].any() or (field_dist[window] < 0).any():
            continue
        letter[window] = patch
        holder[window] = True
        break
    return letter, holder


@dataclass(frozen=True, eq=False)
class _AnatomyImage:
    """The limb's attenuation on one film grid (no lesions) and its masks."""

    att: np.ndarray  # float32 (rows, cols), log units
    body: np.ndarray
    bone: np.ndarray
    cortex: np.ndarray


def _anatomy_image(p: PhantomParams, anatomy: Anatomy, pose: np.ndarray) -> _AnatomyImage:
    """Attenuation of the limb (soft tissue, bones, textures) on the film grid of ``pose``.

    Evaluated in float32 with only exactly rounded operations (+, -, *, /, sqrt), so it is
    the same on any CPU.
    """
    shape = (p.rows, p.cols)
    f32 = np.float32
    # Film pixel -> limb frame (u along the axis, v across), composed into one affine map.
    ca, sa = math.cos(anatomy.axis_angle_rad), math.sin(anatomy.axis_angle_rad)
    to_limb = np.array([[ca, sa], [-sa, ca]]) @ np.hstack(
        [pose[:, :2], (pose[:, 2] - np.array(anatomy.axis_origin_mm))[:, None]]
    )
    att = np.zeros(shape, np.float32)
    body = np.zeros(shape, bool)
    bone_mask = np.zeros(shape, bool)
    cortex_mask = np.zeros(shape, bool)

    # Only the columns the limb can reach are computed (the rest is air).
    reach = float(anatomy.half_width_mm.max()) + 1.0
    b0, b1 = _col_window(to_limb[1], -reach, reach, shape)
    if b1 > b0:
        rows = np.arange(p.rows, dtype=np.float32)[:, None]
        cols = np.arange(b0, b1, dtype=np.float32)[None, :]
        u = rows * f32(to_limb[0, 0]) + (cols * f32(to_limb[0, 1]) + f32(to_limb[0, 2]))
        v = rows * f32(to_limb[1, 0]) + (cols * f32(to_limb[1, 1]) + f32(to_limb[1, 2]))
        look = _Lookup(anatomy, u)
        del u

        def texture(field: TextureField, c_lo: int, c_hi: int) -> np.ndarray:
            # Film pixel -> texture index, composed into one affine map.
            to_tex = (pose - np.array([[0.0, 0.0, field.origin_mm[0]], [0.0, 0.0, field.origin_mm[1]]])) / field.spacing_mm
            cc = np.arange(c_lo, c_hi, dtype=np.float32)[None, :]
            map_r = rows * f32(to_tex[0, 0]) + (cc * f32(to_tex[0, 1]) + f32(to_tex[0, 2]))
            map_c = rows * f32(to_tex[1, 0]) + (cc * f32(to_tex[1, 1]) + f32(to_tex[1, 2]))
            # float64 on snapped values: the interpolation is exact, hence machine-independent.
            out = cv2.remap(field.values, map_c, map_r, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            return out.astype(np.float32)

        # Soft tissue: elliptical cross-section; chord lengths through skin, fat and muscle.
        half = look(anatomy.half_width_mm)
        fat = look(anatomy.fat_mm)
        depth2 = f32(2.0 * anatomy.depth_ratio)
        v2 = v * v

        def chord(a: np.ndarray) -> np.ndarray:
            out = a * a
            out -= v2
            np.maximum(out, f32(0.0), out=out)
            np.sqrt(out, out=out)
            out *= depth2
            return out

        outer = chord(half)
        under_skin = chord(np.maximum(half - f32(1.2), f32(0.0)))
        fat = np.maximum(half - fat, f32(0.0))
        muscle = chord(fat)
        del half, fat, v2
        body[:, b0:b1] = outer > 0
        att_w = att[:, b0:b1]
        att_w += f32(_MU_SKIN) * (outer - under_skin)
        att_w += f32(_MU_FAT) * (under_skin - muscle)
        del outer, under_skin
        for b in range(anatomy.n_bones):
            lo = float((anatomy.bone_offset_mm[b] - anatomy.bone_radius_mm[b]).min()) - 1.0
            hi = float((anatomy.bone_offset_mm[b] + anatomy.bone_radius_mm[b]).max()) + 1.0
            k0, k1 = _col_window(to_limb[1], lo, hi, shape)
            k0, k1 = max(k0, b0), min(k1, b1)
            if k1 <= k0:
                continue
            w = slice(k0 - b0, k1 - b0)
            sub = look.window(w)
            dv2 = v[:, w] - sub(anatomy.bone_offset_mm[b])
            dv2 *= dv2
            ro = sub(anatomy.bone_radius_mm[b])
            ri = ro - sub(anatomy.cortex_mm[b])
            c_out = ro * ro - dv2
            np.maximum(c_out, f32(0.0), out=c_out)
            np.sqrt(c_out, out=c_out)
            c_out *= f32(2.0)
            c_in = ri * ri - dv2
            np.maximum(c_in, f32(0.0), out=c_in)
            np.sqrt(c_in, out=c_in)
            c_in *= f32(2.0)
            del dv2, ro, ri
            excess = sub(anatomy.trabecular[b])
            excess *= f32(_MU_TRABECULAR - _MU_MARROW)
            att_k = att[:, k0:k1]
            att_k += f32(_MU_CORTEX) * (c_out - c_in)
            att_k += (excess + f32(_MU_MARROW)) * c_in
            # Trabecular pattern, averaged over the chord through the medulla (see _FIBRE_CELL_MM).
            grain = texture(anatomy.bone_texture, k0, k1)
            grain *= np.sqrt(c_in)
            grain *= excess
            grain *= f32(_TRABECULAR_HETEROGENEITY * math.sqrt(_TRABECULAR_CELL_MM))
            att_k += grain
            del grain, excess
            muscle[:, w] -= c_out  # bone displaces muscle
            inside = c_out > 0
            bone_mask[:, k0:k1] |= inside
            cortex_mask[:, k0:k1] |= inside & ~(c_in > 0)
            del c_out, c_in, inside
        # Muscle with a fibre/lobule texture averaged over its path (~0.5-1 % when projected).
        np.maximum(muscle, f32(0.0), out=muscle)
        fibre = texture(anatomy.tissue_texture, b0, b1)
        fibre *= np.sqrt(muscle)
        fibre *= f32(_FIBRE_HETEROGENEITY * _MU_MUSCLE * math.sqrt(_FIBRE_CELL_MM))
        att_w += fibre
        del fibre
        # Intermuscular fat planes: fat instead of muscle over a short path where the beam runs
        # along the plane; a rational profile (exactly rounded operations only) across it.
        for k in range(anatomy.plane_offset_mm.shape[0]):
            dv = v - look(anatomy.plane_offset_mm[k])
            dv *= f32(1.0 / anatomy.plane_width_mm[k])
            dv *= dv
            dv += f32(1.0)
            dv *= dv
            path = np.minimum(muscle, f32(anatomy.plane_path_mm[k]))
            path *= f32(_MU_MUSCLE - _MU_FAT)
            path /= dv
            att_w -= path
            del dv, path
        muscle *= f32(_MU_MUSCLE)
        att_w += muscle
        del muscle, v, look
    return _AnatomyImage(att=att, body=body, bone=bone_mask, cortex=cortex_mask)


def _render(
    p: PhantomParams, anatomy: Anatomy, lesions: tuple[LesionSpec, ...], pose: np.ndarray,
    shot: _Shot, rng: np.random.Generator, image: _AnatomyImage | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, list[tuple[LesionSpec, int, float]], set[int]]:
    """Render one film: stored values, masks, labels, (lesion, label, background std) triples,
    truncated ids.

    ``image`` is the anatomy on this grid when already computed. exp, log and filtering run
    in float64, so the quantised values are the same on any CPU.
    """
    shape = (p.rows, p.cols)
    if image is None:
        image = _anatomy_image(p, anatomy, pose)
    body = image.body

    # Collimation, set around the limb as a radiographer would.
    field_dist, insets = _field_distance(shot, shape, p.spacing_mm, body)
    in_field = field_dist >= 0

    # Lesions (analytic footprints on this grid), in id order so labels are stable.
    att = image.att.astype(np.float64)
    labels = np.zeros(shape, np.int32)
    present: list[tuple[LesionSpec, int, float, float]] = []
    truncated: set[int] = set()
    inv_pose = np.linalg.inv(np.vstack([pose, [0.0, 0.0, 1.0]]))[:2]
    for lesion in sorted(lesions, key=lambda item: item.lesion_id):
        patch = _lesion_patch(lesion, pose, inv_pose)
        if patch is None:
            continue  # smaller than a pixel: not on this film
        r0, c0, inside, extra = patch
        whole = int(np.count_nonzero(inside))
        # The part on the film and inside the collimated field; the rest is cut off.
        fr0, fc0 = max(r0, 0), max(c0, 0)
        fr1, fc1 = min(r0 + inside.shape[0], shape[0]), min(c0 + inside.shape[1], shape[1])
        if fr0 >= fr1 or fc0 >= fc1:
            truncated.add(lesion.lesion_id)
            continue
        rs, cs = slice(fr0, fr1), slice(fc0, fc1)
        local = (slice(fr0 - r0, fr1 - r0), slice(fc0 - c0, fc1 - c0))
        inside = inside[local] & in_field[rs, cs]
        extra = extra[local]
        if int(np.count_nonzero(inside)) < whole:
            truncated.add(lesion.lesion_id)
        if not inside.any():
            continue
        window = labels[rs, cs]
        if (window[inside] != 0).any():
            raise RuntimeError(f"phantom lesion {lesion.lesion_id} overlaps another lesion")
        label = len(present) + 1
        window[inside] = label
        att[rs, cs] += extra
        background = _background_std(p, image, r0, c0, patch[2], shot.exposure)
        present.append((lesion, label, background, _lesion_signal(p, patch[2], patch[3])))

    # Film frame: marker, heel, scatter, collimation, noise, blur, log, quantisation.
    s = p.spacing_mm
    letter, holder = _draw_marker(p, shot, shape, body, field_dist, insets)
    # Anode heel along the rows and a gentle off-axis fall-off (separable: no full temporaries).
    r_norm = (np.arange(p.rows, dtype=np.float64) - (p.rows - 1) / 2.0) / p.rows
    c_norm = (np.arange(p.cols, dtype=np.float64) - (p.cols - 1) / 2.0) / p.cols
    beam_rows = shot.exposure * (1.0 - p.heel * r_norm) * (1.0 - 0.04 * r_norm**2)
    beam_cols = 1.0 - 0.04 * c_norm**2
    np.negative(att, out=att)
    primary = np.exp(att, out=att)
    primary *= beam_rows[:, None]
    primary *= beam_cols[None, :]
    penumbra_px = max(0.8 / s, 1.0)
    open_field = field_dist
    open_field *= np.float32(1.0 / (2.0 * penumbra_px))
    open_field += np.float32(0.5)
    np.clip(open_field, np.float32(0.0), np.float32(1.0), out=open_field)
    primary *= open_field
    # Scatter from the irradiated body (computed on a shrunken grid), plus leakage through
    # the collimator blades.
    sigma_px = 12.0 / s
    intensity = _broad_blur(primary, (sigma_px, sigma_px), weight=body)
    intensity *= p.scatter_fraction
    intensity += primary
    np.subtract(np.float32(1.0), open_field, out=open_field)
    open_field *= np.float32(0.02 * shot.exposure)
    intensity += open_field
    del open_field, field_dist
    # The marker lies on the detector: it stops scattered as well as primary photons.
    on_detector = np.nonzero(holder.any(axis=1))[0]
    if on_detector.size:
        band = slice(int(on_detector[0]), int(on_detector[-1]) + 1)
        intensity[band] *= np.exp(-(_MU_HOLDER * holder[band] + _MU_LEAD_PATH * letter[band]))
    photons = p.dose_photons_per_mm2 * s * s
    sigma = np.multiply(intensity, 1.0 / photons, out=primary)
    sigma += p.electronic_noise**2
    np.sqrt(sigma, out=sigma)
    sigma *= rng.standard_normal(shape, dtype=np.float32)
    intensity += sigma
    if p.blur_mm > 0:
        sig_px = p.blur_mm / s
        cv2.GaussianBlur(intensity, (0, 0), dst=sigma, sigmaX=sig_px, sigmaY=sig_px, borderType=cv2.BORDER_REFLECT)
        intensity, sigma = sigma, intensity
    del sigma, primary
    np.maximum(intensity, 1e-4, out=intensity)
    density = np.log(intensity, out=intensity)
    if p.unsharp_amount > 0:
        # Vendor-style processing: boost detail against a broad local mean (in density units).
        sigma_px = p.unsharp_mm / s
        density += p.unsharp_amount * (density - _broad_blur(density, (sigma_px, sigma_px)))
    top = float(2**p.bits_stored - 1)
    # stored = (D - D_lo) * top / (D_hi - D_lo) with D = -ln(I)
    density *= -top / (_D_HI - _D_LO)
    density -= _D_LO * top / (_D_HI - _D_LO)
    np.rint(density, out=density)
    np.clip(density, 0.0, top, out=density)
    masks = {
        "body": body,
        "bone": image.bone,
        "cortex": image.cortex,
        "marker": letter,
        "collimation": ~in_field,
    }
    return density.astype(np.float32), masks, labels, present, truncated


def _lesion_scale_px(inside: np.ndarray) -> float:
    """A lesion's scale ``r`` in pixels: the radius of the largest disc inside its footprint
    ``inside`` (a nodule's radius, a plaque's half-width), at least 1. The background and the
    signal of a lesion are band-passed at this one scale."""
    foot = np.pad(inside.astype(np.uint8), 1)
    return max(float(cv2.distanceTransform(foot, cv2.DIST_L2, 5).max()), 1.0)


def _background_std(
    p: PhantomParams, image: _AnatomyImage, r0: int, c0: int, inside: np.ndarray, exposure: float,
) -> float:
    """Expected background fluctuation (log units) at a lesion's scale around its footprint.

    ``inside`` is the footprint, its first pixel at film (r0, c0) (possibly off the film).
    The lesion's scale ``r`` is the radius of the largest disc inside the footprint (a nodule's
    radius, a plaque's half-width). Texture: the lesion-free attenuation band-passed at that
    scale (Gaussian of sigma r/2 -- Rose's integration over the lesion's area -- minus one of
    sigma 2r, the smooth background), robust std (1.4826 MAD) over a ring r..3r outside the
    footprint within the body. Quantum (+ electronic + quantisation) noise: its per-pixel
    density std at the ring's mean attenuation, reduced by the same band-pass and the detector
    blur. The two add in quadrature. Rounded to 4 significant digits (machine independence).
    """
    rows, cols = p.rows, p.cols
    r_px = _lesion_scale_px(inside)
    hit_r = np.flatnonzero(inside.any(axis=1))
    hit_c = np.flatnonzero(inside.any(axis=0))
    pad = int(math.ceil(9.0 * r_px)) + 2
    a0, a1 = max(r0 + int(hit_r[0]) - pad, 0), min(r0 + int(hit_r[-1]) + 1 + pad, rows)
    b0, b1 = max(c0 + int(hit_c[0]) - pad, 0), min(c0 + int(hit_c[-1]) + 1 + pad, cols)
    if a1 - a0 < 4 or b1 - b0 < 4:
        return 0.0
    att = image.att[a0:a1, b0:b1].astype(np.float64)
    body = image.body[a0:a1, b0:b1].astype(np.float64)
    lesion = np.zeros((a1 - a0, b1 - b0), np.float64)
    # The footprint on this window (the part on the film).
    fr0, fc0 = max(r0, a0), max(c0, b0)
    fr1, fc1 = min(r0 + inside.shape[0], a1), min(c0 + inside.shape[1], b1)
    if fr1 > fr0 and fc1 > fc0:
        lesion[fr0 - a0 : fr1 - a0, fc0 - b0 : fc1 - b0] = inside[fr0 - r0 : fr1 - r0, fc0 - c0 : fc1 - c0]
    # Large lesions are measured on a shrunken copy (the band-pass is >= r/2 wide anyway).
    f = max(int(r_px // 3), 1)
    if f > 1:
        size = (max((b1 - b0) // f, 4), max((a1 - a0) // f, 4))
        att = cv2.resize(att, size, interpolation=cv2.INTER_AREA)
        body = cv2.resize(body, size, interpolation=cv2.INTER_AREA)
        lesion = cv2.resize(lesion, size, interpolation=cv2.INTER_AREA)
    r = r_px / f
    band = cv2.GaussianBlur(att, (0, 0), r / 2.0, borderType=cv2.BORDER_REFLECT)
    band -= cv2.GaussianBlur(att, (0, 0), 2.0 * r, borderType=cv2.BORDER_REFLECT)
    dist = cv2.distanceTransform((lesion < 0.5).astype(np.uint8), cv2.DIST_L2, 5)
    ring = (dist >= r) & (dist <= 3.0 * r) & (body > 0.5)
    values = band[ring]
    texture = 0.0
    if values.size >= 8:
        texture = 1.4826 * float(np.median(np.abs(values - np.median(values))))
        mean_att = float(np.mean(att[ring]))
    else:
        mean_att = float(np.mean(att))
    # Pixel noise in density units: sqrt(I / photons + e^2) / I, with scatter in I.
    intensity = exposure * math.exp(-mean_att) * (1.0 + p.scatter_fraction)
    photons = p.dose_photons_per_mm2 * p.spacing_mm**2
    pixel_var = (intensity / photons + p.electronic_noise**2) / intensity**2
    pixel_var += ((_D_HI - _D_LO) / (2**p.bits_stored - 1)) ** 2 / 12.0
    # Variance left by the band-pass (difference of Gaussians a, b) of white noise, after blur.
    blur2 = (p.blur_mm / p.spacing_mm) ** 2
    a2, b2 = (r_px / 2.0) ** 2 + blur2, (2.0 * r_px) ** 2 + blur2
    gain = 1.0 / (4.0 * math.pi * a2) + 1.0 / (4.0 * math.pi * b2) - 1.0 / (math.pi * (a2 + b2))
    quantum2 = pixel_var * min(gain, 1.0)
    return float(f"{math.sqrt(texture**2 + quantum2):.4g}")


def _lesion_signal(p: PhantomParams, inside: np.ndarray, attenuation: np.ndarray) -> float:
    """Peak of the lesion's added attenuation seen through the band-pass of
    :func:`_background_std` (log units): what an observer integrating over the lesion's area
    sees of it, so that signal / background std is Rose's signal-to-noise ratio.

    The whole analytic footprint counts (also a part cut off by collimation), the detector
    blur included; the same scale ``r`` and Gaussians (r/2 minus 2r) as the background, on
    the same shrunken grid for large lesions. Rounded to 4 significant digits.
    """
    r_px = _lesion_scale_px(inside)
    pad = int(math.ceil(6.0 * r_px + 3.0 * p.blur_mm / p.spacing_mm)) + 2
    a = np.pad(np.where(inside, attenuation, 0.0), pad)
    f = max(int(r_px // 3), 1)
    if f > 1:
        a = cv2.resize(a, (max(a.shape[1] // f, 4), max(a.shape[0] // f, 4)),
                       interpolation=cv2.INTER_AREA)
    r = r_px / f
    blur2 = (p.blur_mm / p.spacing_mm / f) ** 2
    band = cv2.GaussianBlur(a, (0, 0), math.sqrt((r / 2.0) ** 2 + blur2), borderType=cv2.BORDER_CONSTANT)
    band -= cv2.GaussianBlur(a, (0, 0), math.sqrt((2.0 * r) ** 2 + blur2), borderType=cv2.BORDER_CONSTANT)
    return float(f"{float(band.max()):.4g}")


def _make_visible(
    p: PhantomParams, image: _AnatomyImage, lesion: LesionSpec, pose: np.ndarray, exposure: float,
) -> LesionSpec | None:
    """Raise ``lesion``'s density to meet ``p.min_lesion_cnr`` where it lies, or None when
    that would take more than ``_MAX_LESION_DENSITY`` x cortical bone (place it elsewhere)."""
    if p.min_lesion_cnr <= 0:
        return lesion
    inv_pose = np.linalg.inv(np.vstack([pose, [0.0, 0.0, 1.0]]))[:2]
    patch = _lesion_patch(lesion, pose, inv_pose)
    if patch is None:
        return lesion
    r0, c0, inside, attenuation = patch
    need = p.min_lesion_cnr * _background_std(p, image, r0, c0, inside, exposure)
    signal = _lesion_signal(p, inside, attenuation)
    if signal >= need:
        return lesion
    if signal <= 0:
        return None
    # The signal is linear in the density; 0.1 % above the floor absorbs the rounding of the
    # signal and background to 4 significant digits.
    delta_mu = lesion.delta_mu_per_mm * (need / signal) * 1.001
    if delta_mu > _MAX_LESION_DENSITY * (_MU_CORTEX - _MU_MUSCLE):
        return None
    return replace(lesion, delta_mu_per_mm=delta_mu)


def _truth(
    labels: np.ndarray, present: list[tuple[LesionSpec, int, float, float]], masks: dict[str, np.ndarray],
    pixel_area: float, **extra: Any,
) -> PhantomTruth:
    n = len(present)
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    rows_idx, cols_idx = np.nonzero(labels)
    lab = labels[rows_idx, cols_idx]
    sum_r = np.bincount(lab, weights=rows_idx.astype(np.float64), minlength=n + 1)[1:]
    sum_c = np.bincount(lab, weights=cols_idx.astype(np.float64), minlength=n + 1)[1:]
    labels.flags.writeable = False
    for m in masks.values():
        m.flags.writeable = False
    return PhantomTruth(
        labels=labels,
        kinds=tuple(lesion.kind for lesion, _, _, _ in present),
        areas_mm2=tuple(float(c) * pixel_area for c in counts),
        centroids=tuple(
            (float(sum_r[i] / counts[i]), float(sum_c[i] / counts[i])) for i in range(n)
        ),
        total_area_mm2=float(np.sum(counts)) * pixel_area,
        lesion_ids=tuple(lesion.lesion_id for lesion, _, _, _ in present),
        contrasts=tuple(lesion.peak_contrast for lesion, _, _, _ in present),
        over_bone=tuple(lesion.over_bone for lesion, _, _, _ in present),
        background_std=tuple(background for _, _, background, _ in present),
        signals=tuple(signal for _, _, _, signal in present),
        masks=MappingProxyType(dict(masks)),
        **extra,
    )


def _metadata(p: PhantomParams) -> FilmMetadata:
    return FilmMetadata(
        source_format="phantom",
        modality="DX",
        laterality=p.marker_text[0] if p.marker_text[0] in "LR" else None,
        view_position="PA",
        photometric_interpretation="MONOCHROME1" if p.monochrome1 else "MONOCHROME2",
        bits_stored=p.bits_stored,
        value_range=(0.0, float(2**p.bits_stored - 1)),
    )


def _film(p: PhantomParams, stored: np.ndarray) -> Film:
    return Film(
        pixels=stored, spacing_mm=(p.spacing_mm, p.spacing_mm),
        spacing_source=SpacingSource.PIXEL_SPACING, metadata=_metadata(p),
    )


def _lesion_field_mm(p: PhantomParams) -> tuple[float, float, float, float]:
    """World box (row0, row1, col0, col1) lesions stay in, even grown.

    Lesions keep clear of the film's top and bottom (35 mm, less on short films) so that a
    follow-up turned by 6°, shifted by 10 mm and magnified by 3 % still shows them whole
    inside the collimated field; across the limb the field is set around the body anyway.
    """
    height_mm, width_mm = p.rows * p.spacing_mm, p.cols * p.spacing_mm
    keep = min(35.0, 0.18 * height_mm)
    return (keep, height_mm - keep, 5.0, width_mm - 5.0)


def make_phantom(seed: int, params: PhantomParams = PhantomParams()) -> Phantom:
    """Render a baseline phantom film with its ground truth.

    Parameters
    ----------
    seed
        Non-negative integer; the same seed and parameters give identical pixels and truth.
    params
        Film grid, anatomy, lesion and acquisition settings.

    Returns
    -------
    Phantom
        ``film`` (pixels brighter = denser, whole numbers in ``[0, 2**bits_stored - 1]``),
        ``truth`` and the model follow-ups are rendered from.
    """
    rng = _rng(seed)
    p = params
    anatomy = _make_anatomy(rng, p)
    shot = _draw_shot(rng, exposure=1.0)
    field_mm = _lesion_field_mm(p)
    pose = np.array([[p.spacing_mm, 0.0, 0.0], [0.0, p.spacing_mm, 0.0]])
    image = _anatomy_image(p, anatomy, pose)
    kinds = [LesionKind.PLAQUE] * p.n_plaques + [LesionKind.NODULE] * p.n_nodules
    placed: list[LesionSpec] = []
    next_id = 1
    for kind in kinds:  # plaques first: they need the most room
        over_bone = bool(anatomy.n_bones) and bool(rng.uniform() < p.fraction_over_bone)
        put = None
        for _ in range(4):  # a lesion that does not fit (or cannot be made visible) is redrawn
            lesion = _new_lesion(rng, p, kind, next_id, anatomy.axis_angle_rad, over_bone)
            put = _place_lesion(rng, anatomy, lesion, placed, field_mm, p.cluster_fraction)
            if put is not None:
                put = _make_visible(p, image, put, pose, shot.exposure)
            if put is not None:
                break
        if put is None:
            logger.debug("phantom seed %d: no room for a %s; skipped", seed, kind.value)
            continue
        placed.append(put)
        next_id += 1
    stored, masks, labels, present, truncated = _render(p, anatomy, tuple(placed), pose, shot, rng, image)
    truth = _truth(labels, present, masks, p.spacing_mm**2, truncated_ids=tuple(sorted(truncated)))
    truth = replace(
        truth,
        baseline_total_area_mm2=truth.total_area_mm2,
        baseline_areas_mm2=MappingProxyType(dict(zip(truth.lesion_ids, truth.areas_mm2))),
    )
    return Phantom(
        film=_film(p, stored), truth=truth, anatomy=anatomy, lesions=tuple(placed), pose=pose,
        params=p, seed=seed, followup=None, next_lesion_id=next_id, baseline_truth=None,
    )


def _lesion_area(lesion: LesionSpec) -> float:
    """Nominal footprint area in mm² (for steering growth; truth areas come from pixels)."""
    if lesion.kind is LesionKind.NODULE:
        return math.pi * lesion.size_mm**2 * lesion.width_mm * lesion.scale**2
    return math.pi * lesion.size_mm * lesion.width_mm * lesion.scale**2


def _evolve(
    rng: np.random.Generator, base: Phantom, fp: FollowupParams,
    make_visible: Callable[[LesionSpec], LesionSpec | None] = lambda lesion: lesion,
) -> tuple[tuple[LesionSpec, ...], int]:
    """Lesions of the follow-up: grown or shrunk towards ``area_factor``, resolved, new.

    ``make_visible`` applies the visibility floor to a new lesion on the follow-up's grid
    (None: it cannot be made visible there, and is left out)."""
    lesions = list(base.lesions)
    next_id = base.next_lesion_id
    if fp.change is ChangeMode.RETEST:
        return tuple(lesions), next_id
    p = base.params
    areas = np.array([_lesion_area(lesion) for lesion in lesions])
    resolve = rng.uniform(size=len(lesions)) < fp.resolve_fraction
    spread = np.exp(fp.lesion_spread * rng.standard_normal(len(lesions)))
    target = fp.area_factor * float(areas.sum())
    evolved: list[LesionSpec] = []
    # Iterate because growth is capped: what capped lesions cannot take goes to the others.
    factors = np.where(resolve, 0.0, spread)
    for _ in range(5):
        caps = (_MAX_LINEAR_GROWTH / np.array([lesion.scale for lesion in lesions])) ** 2 if lesions else np.zeros(0)
        capped = factors >= caps
        free_area = float((areas * factors * ~capped).sum())
        fixed_area = float((areas * caps * capped).sum())
        if free_area <= 0:
            break
        factors = np.where(capped, caps, factors * max(target - fixed_area, 0.0) / free_area)
    for lesion, f in zip(lesions, factors):
        if f <= 0.02:
            continue  # resolved
        linear = min(math.sqrt(float(f)) * lesion.scale, _MAX_LINEAR_GROWTH)
        fade = min(lesion.fade * float(f) ** 0.25, 1.5)  # shrinking deposits also thin out
        evolved.append(replace(lesion, scale=linear, fade=fade))
    field_mm = _lesion_field_mm(p)
    survivors = {lesion.lesion_id for lesion in evolved}
    for _ in range(fp.n_new):
        over_bone = bool(base.anatomy.n_bones) and bool(rng.uniform() < p.fraction_over_bone)
        new = _new_lesion(rng, p, LesionKind.NODULE, next_id, base.anatomy.axis_angle_rad, over_bone, small=True)
        # Keep clear of resolved lesions too: their place could light up again later.
        others = evolved + [lesion for lesion in lesions if lesion.lesion_id not in survivors]
        put = _place_lesion(rng, base.anatomy, new, others, field_mm)
        if put is not None:
            put = make_visible(put)
        if put is not None:
            evolved.append(put)
            next_id += 1
    return tuple(evolved), next_id


def make_followup(base: Phantom, seed: int, params: FollowupParams = FollowupParams()) -> Phantom:
    """Render a follow-up film of the same limb.

    Parameters
    ----------
    base
        The phantom to start from: the baseline, or an earlier follow-up (its lesions evolve
        further). Positioning and truth are always relative to the series' baseline.
    seed
        Seed of this film's own randomness (lesion changes, collimation, marker, noise).
    params
        Positioning, exposure and lesion change.

    Returns
    -------
    Phantom
        With ``truth.transform`` mapping this film's (row, col, 1) onto the baseline's
        (row, col), ``truth.magnification`` and ``truth.true_change_pct`` at the baseline's
        magnification.
    """
    rng = _rng(seed)
    p = base.params
    # Baseline pixel q shows up at follow-up pixel m R (q - c) + c + t / s; invert that.
    theta = math.radians(params.rotation_deg)
    m = params.magnification
    rot_inv = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]]) / m
    centre = np.array([(p.rows - 1) / 2.0, (p.cols - 1) / 2.0])
    shift = np.array(params.translation_mm, dtype=np.float64) / p.spacing_mm
    transform = np.zeros((2, 3))
    transform[:, :2] = rot_inv
    transform[:, 2] = centre - rot_inv @ (centre + shift)
    pose = p.spacing_mm * transform
    image = _anatomy_image(p, base.anatomy, pose)
    lesions, next_id = _evolve(rng, base, params, lambda new: _make_visible(p, image, new, pose, params.exposure))
    shot = _draw_shot(rng, exposure=params.exposure)
    baseline_truth = base.baseline_truth or base.truth
    stored, masks, labels, present, truncated = _render(p, base.anatomy, lesions, pose, shot, rng, image)
    pixel_area = p.spacing_mm**2
    present_ids = {lesion.lesion_id for lesion, _, _, _ in present}
    base_ids = set(baseline_truth.lesion_ids)
    total = float(np.count_nonzero(labels)) * pixel_area
    base_total = baseline_truth.total_area_mm2
    change = (total / m**2 - base_total) / base_total * 100.0 if base_total > 0 else 0.0
    transform.flags.writeable = False
    truth = _truth(
        labels, present, masks, pixel_area,
        magnification=m,
        transform=transform,
        baseline_total_area_mm2=base_total,
        baseline_areas_mm2=baseline_truth.baseline_areas_mm2,
        true_change_pct=float(change),
        resolved_ids=tuple(sorted(base_ids - present_ids - truncated)),
        new_ids=tuple(sorted(present_ids - base_ids)),
        truncated_ids=tuple(sorted(truncated)),
    )
    return Phantom(
        film=_film(p, stored), truth=truth, anatomy=base.anatomy, lesions=lesions, pose=pose,
        params=p, seed=seed, followup=params, next_lesion_id=next_id, baseline_truth=baseline_truth,
    )


# --------------------------------------------------------------------------- writing sets


class FilmFormat(str, enum.Enum):
    """How :func:`write_phantom` stores a film."""

    DICOM = "dicom"
    PNG = "png"


@dataclass(frozen=True)
class FilmOutput:
    """How and under which identity one phantom film is written (see :func:`write_phantom`)."""

    name: str  # file stem
    patient_id: str
    study_date: str  # YYYY-MM-DD
    laterality: str
    view_position: str
    body_part: str = "ARM"
    film_format: FilmFormat = FilmFormat.DICOM
    monochrome1: bool = False
    spacing_tag: SpacingSource = SpacingSource.PIXEL_SPACING
    ermf: float = 1.1
    transfer_syntax: str = "jpeg2000-lossless"


#: Truth label images are gzipped 16-bit PGM: a folder scan for films (PNG/TIFF/JPEG/DICOM)
#: never mistakes them for radiographs, and they stay small.
TRUTH_LABELS_SUFFIX = ".truth.pgm.gz"
TRUTH_JSON_SUFFIX = ".truth.json"


def write_truth(phantom: Phantom, stem: str | Path, *, film_file: str = "", extra: Mapping[str, Any] | None = None) -> list[Path]:
    """Write ``STEM.truth.json`` (per-lesion kind, area, centroid, id; totals; transform) and
    ``STEM.truth.pgm`` (16-bit label image, k = lesion k of the JSON).

    Returns the paths written. Both files are written atomically and byte-reproducibly.
    """
    from calcimage.io.write import write_bytes_atomic
    from calcimage.params import params_to_dict

    stem = Path(stem)
    labels_path = stem.with_name(stem.name + TRUTH_LABELS_SUFFIX)
    json_path = stem.with_name(stem.name + TRUTH_JSON_SUFFIX)
    truth = phantom.truth
    if truth.n_lesions > 65535:
        raise ParameterError(f"{truth.n_lesions} lesions do not fit a 16-bit label image")
    ok, encoded = cv2.imencode(".pgm", truth.labels.astype(np.uint16))
    if not ok:
        raise RuntimeError("PGM encoding of the truth labels failed")
    packed = gzip.compress(encoded.tobytes(), compresslevel=9, mtime=0)  # mtime=0: reproducible
    info: dict[str, Any] = {
        "film": film_file,
        "labels": labels_path.name,
        "generator": "calcimage.phantom",
        "seed": phantom.seed,
        "rows": phantom.film.shape[0],
        "cols": phantom.film.shape[1],
        "spacing_mm": list(phantom.film.spacing_mm or ()),
        **(dict(extra) if extra else {}),
        "phantom_params": params_to_dict(phantom.params),
        "followup_params": params_to_dict(phantom.followup) if phantom.followup else None,
        **truth.to_dict(),
    }
    write_bytes_atomic(labels_path, packed)
    write_bytes_atomic(json_path, (json.dumps(info, indent=1) + "\n").encode("utf-8"))
    return [labels_path, json_path]


def read_truth_labels(path: str | Path) -> np.ndarray:
    """Read a ``NAME.truth.pgm.gz`` label image written by :func:`write_truth` (int32)."""
    data = gzip.decompress(Path(path).read_bytes())
    labels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise ValueError(f"{path}: not a PGM label image")
    return labels.astype(np.int32)


def write_phantom(phantom: Phantom, out_dir: str | Path, output: FilmOutput) -> list[Path]:
    """Write a phantom's film (DICOM or PNG + sidecar) and its truth files into ``out_dir``.

    Returns the paths written (film first).
    """
    out = Path(out_dir)
    if output.film_format is FilmFormat.PNG:
        film_path = out / f"{output.name}.png"
        write_png(
            phantom.film, film_path, patient_id=output.patient_id, study_date=output.study_date,
            laterality=output.laterality, view_position=output.view_position,
            body_part=output.body_part, monochrome1=output.monochrome1,
        )
        written = [film_path, film_path.with_suffix(".json")]
    else:
        film_path = out / f"{output.name}.dcm"
        write_dicom(
            phantom.film, film_path, patient_id=output.patient_id, study_date=output.study_date,
            laterality=output.laterality, view_position=output.view_position,
            body_part=output.body_part, spacing_tag=output.spacing_tag, ermf=output.ermf,
            transfer_syntax=output.transfer_syntax, monochrome1=output.monochrome1,
            series_description="calcimage phantom",
        )
        written = [film_path]
    extra = {
        "patient_id": output.patient_id,
        "study_date": output.study_date,
        "laterality": output.laterality,
        "view_position": output.view_position,
        "months": phantom.followup.months if phantom.followup else 0,
    }
    written += write_truth(phantom, out / output.name, film_file=film_path.name, extra=extra)
    return written


def _add_months(date: dt.date, months: int) -> dt.date:
    month = date.month - 1 + months
    year = date.year + month // 12
    month = month % 12 + 1
    day = min(date.day, 28)
    return dt.date(year, month, day)


def random_followup_params(rng: np.random.Generator, *, months: int, area_factor: float) -> FollowupParams:
    """Positioning and exposure drawn within the clinical ranges (±6°, ±10 mm, ±3 %, ×0.7-1.4)."""
    return FollowupParams(
        rotation_deg=float(rng.uniform(-6.0, 6.0)),
        translation_mm=(float(rng.uniform(-10.0, 10.0)), float(rng.uniform(-10.0, 10.0))),
        magnification=float(rng.uniform(0.97, 1.03)),
        exposure=float(math.exp(rng.uniform(math.log(0.7), math.log(1.4)))),
        change=ChangeMode.EVOLVE,
        area_factor=area_factor,
        resolve_fraction=0.15 if area_factor < 1.0 else 0.05,
        n_new=0 if area_factor < 1.0 else int(rng.integers(1, 3)),
        months=months,
    )


def write_pairs(
    out_dir: str | Path, *, seed: int = 0, pairs: int = 1, months: tuple[int, ...] = (3,),
    params: PhantomParams = PhantomParams(), film_format: FilmFormat = FilmFormat.DICOM,
) -> list[Path]:
    """Write ``pairs`` synthetic patients, each a baseline and one follow-up per ``months``.

    Patient k (0-based) is ``SYN<seed>-<k>``; its baseline uses seed ``seed * 1000 + k`` and
    its overall change (a random area factor in 0.5-1.6) is spread evenly over the follow-ups.
    Files are named ``<patient>_<L|R>_PA_<date>`` as :mod:`calcimage.study` expects.
    """
    require(isinstance(pairs, int) and 1 <= pairs <= 1000, "pairs", pairs, "an integer in [1, 1000]")
    require(
        len(months) > 0 and all(isinstance(m, int) and 0 < m <= 600 for m in months)
        and list(months) == sorted(set(months)),
        "months", months, "increasing whole months after the baseline, e.g. (3, 9)",
    )
    out = Path(out_dir)
    written: list[Path] = []
    for k in range(pairs):
        rng = _rng(seed * 1000 + k + 500_000)
        side = "L" if k % 2 == 0 else "R"
        p = replace(params, marker_text=side)
        base = make_phantom(seed * 1000 + k, p)
        patient = f"SYN{seed}-{k}"
        start = dt.date(2025, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365)))
        final = float(rng.uniform(0.5, 1.6))
        outputs = FilmOutput(
            name=f"{patient}_{side}_PA_{start.isoformat()}", patient_id=patient,
            study_date=start.isoformat(), laterality=side, view_position="PA",
            film_format=film_format, transfer_syntax="explicit",
        )
        written += write_phantom(base, out, outputs)
        previous, previous_factor = base, 1.0
        for i, m in enumerate(months):
            factor = final ** ((i + 1) / len(months))
            fp = random_followup_params(rng, months=m, area_factor=factor / previous_factor)
            follow = make_followup(previous, seed * 1000 + k + 1000 * (i + 1) + 700_000, fp)
            date = _add_months(start, m)
            written += write_phantom(follow, out, replace(outputs, name=f"{patient}_{side}_PA_{date.isoformat()}", study_date=date.isoformat()))
            previous, previous_factor = follow, factor
    return written


#: The committed sample set (sample_images/): two patients, baseline + 3 + 9 months each.
#: Patient SYN001 (left forearm, raw detector images) improves; patient SYN002 (right lower
#: leg, 10-bit, vendor-style unsharp masking) progresses.
SAMPLE_FILM_PARAMS = PhantomParams(rows=1000, cols=850, spacing_mm=0.2, bits_stored=12)


def _sample_series() -> list[tuple[str, PhantomParams, int, list[tuple[FollowupParams | None, int, FilmOutput]]]]:
    a = replace(SAMPLE_FILM_PARAMS, marker_text="L", limb_width_mm=(60.0, 75.0), n_nodules=9, n_plaques=3)
    b = replace(
        SAMPLE_FILM_PARAMS, marker_text="R", limb_width_mm=(85.0, 100.0), n_nodules=10, n_plaques=4,
        bits_stored=10, unsharp_amount=1.0,
    )
    a_out = FilmOutput(name="", patient_id="SYN001", study_date="", laterality="L", view_position="PA", body_part="ARM")
    b_out = FilmOutput(name="", patient_id="SYN002", study_date="", laterality="R", view_position="AP", body_part="LEG")
    series_a = [
        (None, 0, replace(a_out, name="SYN001_L_PA_2025-01-15", study_date="2025-01-15")),
        (
            FollowupParams(rotation_deg=3.5, translation_mm=(6.0, -4.0), magnification=1.02, exposure=0.8,
                           area_factor=0.8, lesion_spread=0.2, resolve_fraction=0.1, n_new=0, months=3),
            3,
            replace(a_out, name="SYN001_L_PA_2025-04-15", study_date="2025-04-15", monochrome1=True,
                    spacing_tag=SpacingSource.IMAGER_ERMF, ermf=1.08),
        ),
        (
            FollowupParams(rotation_deg=-2.5, translation_mm=(-5.0, 7.0), magnification=0.98, exposure=1.25,
                           area_factor=0.6875, lesion_spread=0.2, resolve_fraction=0.15, n_new=0, months=9),
            9,
            replace(a_out, name="SYN001_L_PA_2025-10-15", study_date="2025-10-15", film_format=FilmFormat.PNG),
        ),
    ]
    series_b = [
        (None, 0, replace(b_out, name="SYN002_R_AP_2025-02-03", study_date="2025-02-03", monochrome1=True)),
        (
            FollowupParams(rotation_deg=-5.0, translation_mm=(-8.0, 3.0), magnification=1.03, exposure=0.7,
                           area_factor=1.3, lesion_spread=0.25, resolve_fraction=0.0, n_new=2, months=3),
            3,
            replace(b_out, name="SYN002_R_AP_2025-05-05", study_date="2025-05-05",
                    spacing_tag=SpacingSource.IMAGER, transfer_syntax="deflated"),
        ),
        (
            FollowupParams(rotation_deg=4.0, translation_mm=(4.0, -9.0), magnification=0.975, exposure=1.35,
                           area_factor=1.3077, lesion_spread=0.25, resolve_fraction=0.0, n_new=2, months=9),
            9,
            replace(b_out, name="SYN002_R_AP_2025-11-03", study_date="2025-11-03"),
        ),
    ]
    return [("SYN001", a, 101, series_a), ("SYN002", b, 202, series_b)]


def write_sample_set(out_dir: str | Path) -> list[Path]:
    """Write the committed sample set (see ``sample_images/README.md``) into ``out_dir``.

    Each series is a baseline and follow-ups made in turn from the previous film (so
    lesions evolve progressively); truth is relative to the series' baseline. Returns the
    paths written; the same code and library versions give byte-identical files.
    """
    out = Path(out_dir)
    written: list[Path] = []
    for _patient, params, seed, series in _sample_series():
        current: Phantom | None = None
        for k, (fp, _months, output) in enumerate(series):
            if fp is None:
                current = make_phantom(seed, params)
            else:
                assert current is not None
                current = make_followup(current, seed + k, fp)
            written += write_phantom(current, out, output)
    return written
