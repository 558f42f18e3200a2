"""Longitudinal comparison: ``compare(base, follow, params) -> Comparison``.

The flow of :func:`compare`:

1. **Safety** — refuse films of different patients, laterality, view or body part, and films
   without a pixel spacing (:class:`~calcimage.errors.IncompatibleFilmsError`).
2. **Registration** (:func:`calcimage.register.register`) of the follow-up onto the baseline,
   in millimetres, with the body masks and without the lesions themselves (they change).
3. **Magnification** — follow-up areas are divided by the registration scale squared, so they
   are expressed at the baseline's magnification; raw figures are kept.
4. **Matching** (:func:`calcimage.match.match_lesions`) — follow-up labels warped into baseline
   space, optimal assignment on overlap and centroid distance, merges and splits grouped.
5. **Change** — totals and per-region Δcount, Δarea, Δburden, the interval between study dates
   and the film-level category (SCTC convention: ±25 % total area).
"""

from __future__ import annotations

import enum
import logging
import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from calcimage.errors import CalcimageWarning, IncompatibleFilmsError
from calcimage.measure import Measurement
from calcimage.params import params_to_dict, require, require_positive, require_range
from calcimage.segment import renumber_in_raster_order

__all__ = [
    "Status",
    "Category",
    "Relation",
    "TransformKind",
    "CompareParams",
    "Registration",
    "LesionChange",
    "Comparison",
    "compare",
    "check_compatible",
    "classify_change",
    "DAYS_PER_MONTH",
]

logger = logging.getLogger(__name__)

#: Mean length of a month in days (365.25 / 12), for "months between study dates".
DAYS_PER_MONTH = 30.4375


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


class Relation(str, enum.Enum):
    """How the lesions of one match group correspond."""

    ONE_TO_ONE = "one_to_one"
    #: Several baseline lesions became one follow-up lesion.
    MERGE = "merge"
    #: One baseline lesion became several follow-up lesions.
    SPLIT = "split"
    #: Several baseline lesions correspond to several follow-up lesions.
    COMPLEX = "complex"
    NEW = "new"
    RESOLVED = "resolved"
    #: Labelled on one film only, but found at its registered place on the other (paired
    #: measurement): its area there is its segmented area times the ratio of segmentation's
    #: edge rule measured on the two films.
    UNLABELLED = "unlabelled"


class TransformKind(str, enum.Enum):
    """Geometric model of the registration."""

    #: Rotation, isotropic scale and translation (patient repositioned, different distance).
    SIMILARITY = "similarity"
    #: Full affine (adds shear and anisotropic scale; for tilted detectors).
    AFFINE = "affine"


@dataclass(frozen=True)
class CompareParams:
    """Every knob of :func:`compare`. Sizes are in mm, changes in percent.

    Attributes
    ----------
    progression_pct, regression_pct
        Film-level category thresholds on the total area change (SCTC: +25 / −25 %).
    stable_pct, stable_mm2
        A matched lesion is ``stable`` when its area changed by at most ``stable_pct`` percent
        **or** at most ``stable_mm2`` mm²; otherwise ``grown`` or ``shrunk``.
    transform
        Geometric model of the registration.
    registration_spacings_mm
        Pixel sizes of the registration pyramid, coarse to fine (never finer than the films).
    max_iterations
        ECC iterations per pyramid level.
    min_quality
        Registration quality (correlation of the high-passed gradient images over the
        overlap, in [0, 1]) below which the films are declared not to align. Phantom films of
        one limb score 0.86-1.00, forearms of two different phantoms 0.34-0.58.
    min_overlap
        Fraction of the baseline body the registered follow-up must cover.
    max_scale_change
        Largest plausible magnification difference (0.25 = follow-up 25 % larger or smaller).
    match_distance_mm
        Lesions that do not overlap after registration may still match when their centroids
        are at most this far apart (in baseline mm).
    group_overlap
        A non-assigned lesion joins a merge/split group when its overlap with a lesion of the
        group is at least this fraction of the smaller of the two.
    allow_different_patients
        Compare films whose PatientIDs differ (e.g. anonymised with different ids).
    allow_different_views
        Compare films whose laterality, view position or body part differ.
    paired
        Paired measurement: a lesion labelled on one film only is looked for at its registered
        place on the other (segmentation's detection flickers near its threshold); when a
        signal is there, the lesion is measured there and is not counted new or resolved.
    paired_min_sigma
        The mean contrast over the mapped footprint must reach this many of its own noise
        sigmas (the spread of footprint-sized means around it) for the lesion to be present.
    paired_min_fraction
        ... and at least this fraction of the mean contrast the same measurement finds on the
        lesion's own film (a faint offset of the anatomy under a large footprint can be
        significant without being a lesion).
    paired_anatomy_fraction
        ... or at least this fraction when the place is no brighter than the 95th percentile
        of the ring around it: anatomy (a cortex) running through the footprint is significant
        by itself, so the place must look much as it did (a lesion resolved from over a cortex
        keeps about half its contrast there; anatomy labelled on one film only keeps 0.6-1).
    paired_min_own_share
        The lesion's area on the other film is its segmented area times the rule's area there
        over the rule's area on its own film. When the rule finds less than this share of the
        lesion's footprint on its own film, that ratio is not used (2 px of a 229 px
        footprint gave a 9 mm² lesion 1337 mm² on the other film, fresh pair 3013) and the
        rule's area on the other film is taken as it is.
    paired_margin_mm
        The mapped footprint is grown by this much (registration error, growth) before the
        other film's pixels at the edge level are counted.
    paired_grow_mm
        When the lesion found at the place reaches the ring (it grew), the background is
        fitted again beyond it and its area may reach this far from the mapped footprint.
    paired_ring_mm
        Width of the ring beyond the margin the local background and noise come from (at
        least twice the footprint's size).
    paired_matched_ratio
        A matched lesion (or merge/split group) over bone whose two segmented areas differ by
        more than this factor is measured by paired measurement's rule on both films (over the
        union of both footprints): the larger segmented area is kept and the other side
        follows from the rule's ratio. Over bone the cortex-line cut and the cortex-band rules
        take parts of a lesion away on one film and not on the other. 0 turns it off.
    paired_pixel_model
        A matched lesion (or group) that segmentation's pixel model (``pixel_min_prob``)
        found on one film and the rules found on the other is measured the same way, with
        the larger segmented area kept: the two methods take different shares of a lesion.
        So is one the model found on both films when its two areas differ by more than
        ``paired_matched_ratio``: its regions follow the probability's level, which each
        film's noise moves.
    paired_all_matched
        Every matched lesion (or merge/split group) is measured by paired measurement's rule
        on both films, over the union of both footprints: the larger segmented area is kept
        and the other side follows from the rule's ratio (session 17). Segmentation takes a
        different share of a lesion on each film (its threshold follows each film's noise)
        and adds a blurred rim whose width does not grow with the lesion, so the ratio of
        segmented areas compresses growth. Hand-made labellings (no segmentation scale, e.g.
        the phantom's true labels) keep their areas. False: only the groups of
        ``paired_matched_ratio`` and ``paired_pixel_model``.
    paired_edge_fraction
        The rule cuts a lesion's edge at this fraction of its peak contrast, above the
        blurred rim (0: at segmentation's ``edge_fraction``, 0.1, which follows the rim and
        pulls every ratio towards 1).
    share_bone
        Segment both films with one bone mask: a film to which the other film's registered
        bone adds at least ``share_bone_min_mm2`` (in its body) is segmented again with that
        bone added (bone recognised on one film only changes thresholds and exclusions there,
        and lesions would appear or vanish with it).
    share_bone_min_mm2
        See ``share_bone``; 500 mm² is a piece of shaft 10 mm wide and 50 mm long (the masks'
        outlines always differ a little).
    """

    progression_pct: float = 25.0
    regression_pct: float = -25.0
    stable_pct: float = 20.0
    stable_mm2: float = 2.0
    transform: TransformKind = TransformKind.SIMILARITY
    registration_spacings_mm: tuple[float, ...] = (4.0, 2.0, 1.0)
    max_iterations: int = 60
    min_quality: float = 0.7
    min_overlap: float = 0.3
    max_scale_change: float = 0.25
    match_distance_mm: float = 3.0
    group_overlap: float = 0.25
    allow_different_patients: bool = False
    allow_different_views: bool = False
    paired: bool = True
    paired_min_sigma: float = 4.0
    paired_min_fraction: float = 0.2
    paired_anatomy_fraction: float = 0.55
    paired_min_own_share: float = 0.25
    paired_margin_mm: float = 1.0
    paired_ring_mm: float = 3.0
    paired_grow_mm: float = 4.0
    paired_matched_ratio: float = 3.0
    paired_pixel_model: bool = True
    paired_all_matched: bool = True
    paired_edge_fraction: float = 0.3
    share_bone: bool = True
    share_bone_min_mm2: float = 500.0

    def __post_init__(self) -> None:
        require_positive("progression_pct", self.progression_pct, allow_zero=True)
        require(
            isinstance(self.regression_pct, (int, float)) and -100.0 <= self.regression_pct <= 0.0,
            "regression_pct", self.regression_pct, "a number in [-100, 0]",
        )
        require_positive("stable_pct", self.stable_pct, allow_zero=True)
        require_positive("stable_mm2", self.stable_mm2, allow_zero=True)
        require(isinstance(self.transform, TransformKind), "transform", self.transform,
                "one of " + ", ".join(repr(t.value) for t in TransformKind))
        spacings = self.registration_spacings_mm
        require(
            isinstance(spacings, tuple) and len(spacings) >= 1
            and all(isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in spacings)
            and all(a >= b for a, b in zip(spacings, spacings[1:])),
            "registration_spacings_mm", spacings, "positive sizes in mm, coarse to fine",
        )
        require(isinstance(self.max_iterations, int) and self.max_iterations >= 1,
                "max_iterations", self.max_iterations, "an integer >= 1")
        require_range("min_quality", self.min_quality, 0.0, 1.0)
        require_range("min_overlap", self.min_overlap, 0.0, 1.0)
        require_range("max_scale_change", self.max_scale_change, 0.0, 0.9)
        require_positive("match_distance_mm", self.match_distance_mm, allow_zero=True)
        require_range("group_overlap", self.group_overlap, 0.0, 1.0)
        require(isinstance(self.allow_different_patients, bool), "allow_different_patients",
                self.allow_different_patients, "true or false")
        require(isinstance(self.allow_different_views, bool), "allow_different_views",
                self.allow_different_views, "true or false")
        require(isinstance(self.paired, bool), "paired", self.paired, "true or false")
        require_positive("paired_min_sigma", self.paired_min_sigma)
        require_range("paired_min_fraction", self.paired_min_fraction, 0.0, 1.0)
        require_range("paired_anatomy_fraction", self.paired_anatomy_fraction, 0.0, 1.0)
        require_range("paired_min_own_share", self.paired_min_own_share, 0.0, 1.0)
        require_positive("paired_margin_mm", self.paired_margin_mm, allow_zero=True)
        require_positive("paired_ring_mm", self.paired_ring_mm)
        require_positive("paired_grow_mm", self.paired_grow_mm, allow_zero=True)
        require(isinstance(self.paired_matched_ratio, (int, float)) and (
            self.paired_matched_ratio == 0 or self.paired_matched_ratio > 1), "paired_matched_ratio",
            self.paired_matched_ratio, "0 (off) or a factor > 1")
        require(isinstance(self.paired_pixel_model, bool), "paired_pixel_model", self.paired_pixel_model,
                "true or false")
        require(isinstance(self.paired_all_matched, bool), "paired_all_matched", self.paired_all_matched,
                "true or false")
        require_range("paired_edge_fraction", self.paired_edge_fraction, 0.0, 0.95)
        require(isinstance(self.share_bone, bool), "share_bone", self.share_bone, "true or false")
        require_positive("share_bone_min_mm2", self.share_bone_min_mm2, allow_zero=True)


@dataclass(frozen=True, eq=False)
class Registration:
    """Transform from follow-up pixel coordinates to baseline pixel coordinates.

    ``matrix`` is 2×3 and maps a follow-up point ``(row, col, 1)`` to baseline ``(row, col)``.
    ``scale`` is the isotropic magnification of follow-up relative to baseline (follow-up
    objects look ``scale`` times larger, in mm — the films' pixel spacings are accounted for);
    ``quality`` is in [0, 1].

    Attributes
    ----------
    matrix_mm
        2×3, maps a follow-up position in mm ``(row_mm, col_mm, 1)`` to the baseline's, where
        the position of pixel index ``i`` is ``(i + 0.5) × spacing`` (origin at the film's
        top-left corner).
    rotation_deg
        Rotation of the follow-up → baseline map in degrees; positive turns +row towards
        +col (anticlockwise as displayed, rows running down).
    translation_mm
        (row, col) translation of ``matrix_mm``.
    overlap
        Fraction of the baseline's registration mask covered by the registered follow-up.
    """

    matrix: np.ndarray
    scale: float
    quality: float
    rotation_deg: float = 0.0
    method: str = ""
    translation_mm: tuple[float, float] = (0.0, 0.0)
    matrix_mm: np.ndarray | None = None
    overlap: float = 1.0
    transform: TransformKind = TransformKind.SIMILARITY

    def map_points(self, rows: Any, cols: Any) -> tuple[np.ndarray, np.ndarray]:
        """Map follow-up pixel positions (rows, cols) to baseline pixel positions."""
        r = np.asarray(rows, dtype=np.float64)
        c = np.asarray(cols, dtype=np.float64)
        m = np.asarray(self.matrix, dtype=np.float64)
        return m[0, 0] * r + m[0, 1] * c + m[0, 2], m[1, 0] * r + m[1, 1] * c + m[1, 2]

    def inverse_matrix(self) -> np.ndarray:
        """The 2×3 matrix mapping a baseline point ``(row, col, 1)`` to follow-up ``(row, col)``."""
        return np.linalg.inv(np.vstack([np.asarray(self.matrix, dtype=np.float64), [0.0, 0.0, 1.0]]))[:2]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``registration`` object of comparison.json)."""
        return {
            "matrix": [[float(v) for v in row] for row in np.asarray(self.matrix)],
            "scale": float(self.scale),
            "quality": float(self.quality),
            "rotation_deg": float(self.rotation_deg),
            "translation_mm": [float(v) for v in self.translation_mm],
            "overlap": float(self.overlap),
            "transform": self.transform.value,
            "method": self.method,
        }


@dataclass(frozen=True)
class LesionChange:
    """One row of changes.csv.

    Rows of a merge or split group share ``group``, ``status`` and the group totals. So that
    column sums equal the film totals, each row carries its own lesion's area on the side with
    more lesions and a share of the other side's group area proportional to it (a merge of
    baseline 1 (3 mm²) and 2 (1 mm²) into follow-up 7 (8 mm²) gives rows (1, 7, 3, 6) and
    (2, 7, 1, 2)).
    """

    baseline_id: int | None
    followup_id: int | None
    status: Status
    area_baseline_mm2: float | None
    area_followup_mm2: float | None  # at the baseline's magnification
    group: int = 0
    relation: Relation = Relation.ONE_TO_ONE
    #: Same share, before dividing by the registration scale squared.
    area_followup_raw_mm2: float | None = None
    group_area_baseline_mm2: float = 0.0
    group_area_followup_mm2: float = 0.0
    #: Group change in percent of the baseline area (None for new lesions).
    change_pct: float | None = None
    #: Overlap (Dice) of the pair after registration, 0 when matched by distance only.
    overlap_dice: float = 0.0
    #: Distance between the pair's centroids after registration, in baseline mm.
    centroid_distance_mm: float | None = None
    #: A new (resolved) lesion whose centroid falls outside the baseline's (follow-up's) film
    #: or inside its collimation: its appearance (disappearance) is not a real change.
    outside_other_field: bool = False
    #: Paired measurement of a lesion labelled on one film only: the mean contrast at its
    #: registered place on the other film, in noise sigmas (None when not looked for).
    other_film_signal_sigma: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (one item of comparison.json ``lesions``)."""
        return {
            "baseline_id": self.baseline_id,
            "followup_id": self.followup_id,
            "status": self.status.value,
            "area_baseline_mm2": _num(self.area_baseline_mm2),
            "area_followup_mm2": _num(self.area_followup_mm2),
            "area_followup_raw_mm2": _num(self.area_followup_raw_mm2),
            "group": self.group,
            "relation": self.relation.value,
            "group_area_baseline_mm2": _num(self.group_area_baseline_mm2),
            "group_area_followup_mm2": _num(self.group_area_followup_mm2),
            "change_pct": _num(self.change_pct),
            "overlap_dice": _num(self.overlap_dice),
            "centroid_distance_mm": _num(self.centroid_distance_mm),
            "outside_other_field": self.outside_other_field,
            "other_film_signal_sigma": _num(self.other_film_signal_sigma, 3),
        }


def _num(value: float | None, digits: int = 6) -> float | None:
    """Round for JSON; None and non-finite values become None."""
    if value is None or not math.isfinite(float(value)):
        return None
    return round(float(value), digits)


@dataclass(frozen=True, eq=False)
class Comparison:
    """Result of :func:`compare`.

    Attributes
    ----------
    change
        Film totals: ``total_area_mm2`` (Δ, follow-up at baseline magnification),
        ``total_area_pct``, ``lesion_count`` (Δ), ``total_burden_pct``, plus the figures they
        come from (``total_area_baseline_mm2``, ``total_area_followup_mm2``,
        ``total_area_followup_raw_mm2``, ``lesion_count_baseline``/``_followup``,
        ``total_burden_baseline``/``_followup``, ``total_burden_mm2``) and
        ``lesions_outside_common_field`` (new/resolved lesions outside the other film's field).
    regions
        One dict per region (union of both films' regions, baseline order first) with the
        same Δ figures per region.
    interval_days, interval_months
        Between the StudyDates, None when either is unknown.
    """

    baseline: Measurement
    followup: Measurement
    registration: Registration
    lesions: tuple[LesionChange, ...]
    change: dict[str, Any]
    regions: tuple[dict[str, Any], ...]
    category: Category
    interval_days: int | None
    params: CompareParams = field(default_factory=CompareParams)
    interval_months: float | None = None
    #: The films segmented again with the other film's bone added (``"baseline"``,
    #: ``"followup"``; see ``CompareParams.share_bone``); ``baseline``/``followup`` are those.
    bone_shared: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """comparison.json without the ``baseline`` and ``followup`` summaries.

        The CLI adds those two (the per-film summary.json objects) and writes the file.
        """
        return {
            "registration": self.registration.to_dict(),
            "interval_days": self.interval_days,
            "interval_months": _num(self.interval_months, 3),
            "change": {k: (_num(v) if isinstance(v, float) else v) for k, v in self.change.items()},
            "category": self.category.value,
            "lesions": [row.to_dict() for row in self.lesions],
            "regions": [
                {k: (_num(v) if isinstance(v, float) else v) for k, v in r.items()} for r in self.regions
            ],
            "bone_shared": list(self.bone_shared),
            "params": params_to_dict(self.params),
        }


# --------------------------------------------------------------------------------------------
# safety


def _norm(value: str | None) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split()).upper()
    return text or None


def check_compatible(base: Measurement, follow: Measurement, params: CompareParams = CompareParams()) -> None:
    """Refuse pairs that must not be compared.

    Raises
    ------
    IncompatibleFilmsError
        Different PatientID (unless ``allow_different_patients``); different laterality, view
        position or body part when both films record it (unless ``allow_different_views``);
        a film without pixel spacing.
    """
    for role, m in (("baseline", base), ("follow-up", follow)):
        if m.film.spacing_mm is None:
            raise IncompatibleFilmsError(
                f"{role} film {m.film.name!r} has no pixel spacing: comparing areas needs mm; "
                "give the spacing with --spacing MM (calcimage.load(path, spacing_mm=...))"
            )
    mb, mf = base.film.metadata, follow.film.metadata
    pb, pf = _norm(mb.patient_id), _norm(mf.patient_id)
    if pb is not None and pf is not None and pb != pf and not params.allow_different_patients:
        raise IncompatibleFilmsError(
            f"films belong to different patients (PatientID {mb.patient_id!r} vs {mf.patient_id!r}); "
            "set allow_different_patients = true in [compare] if this is intended"
        )
    if params.allow_different_views:
        return
    for label, attr in (("laterality", "laterality"), ("view position", "view_position"),
                        ("body part", "body_part")):
        vb, vf = _norm(getattr(mb, attr)), _norm(getattr(mf, attr))
        if vb is not None and vf is not None and vb != vf:
            raise IncompatibleFilmsError(
                f"films differ in {label} ({getattr(mb, attr)!r} vs {getattr(mf, attr)!r}); "
                "compare films of the same side and view, or set allow_different_views = true in [compare]"
            )


# --------------------------------------------------------------------------------------------
# change figures


def _pct(before: float, after: float) -> float | None:
    if before <= 0.0:
        return None
    return 100.0 * (after - before) / before


def classify_change(total_area_pct: float | None, area_baseline_mm2: float, area_followup_mm2: float,
                    params: CompareParams = CompareParams()) -> Category:
    """Film-level category from the total area change.

    With no calcinosis at baseline the percentage is undefined: any follow-up calcinosis larger
    than ``stable_mm2`` is progression, otherwise stable.
    """
    if total_area_pct is None:
        if area_followup_mm2 - area_baseline_mm2 > params.stable_mm2:
            return Category.PROGRESSION
        return Category.STABLE
    if total_area_pct > params.progression_pct:
        return Category.PROGRESSION
    if total_area_pct < params.regression_pct:
        return Category.REGRESSION
    return Category.STABLE


def _burden(m: Measurement, region: str | None = None) -> float:
    return float(sum(l.burden for l in m.lesions if region is None or l.region == region))


def _area(m: Measurement, region: str | None = None) -> float:
    return float(sum(l.area_mm2 or 0.0 for l in m.lesions if region is None or l.region == region))


def _count(m: Measurement, region: str | None = None) -> int:
    return sum(1 for l in m.lesions if region is None or l.region == region)


def _row_lesions(r: LesionChange, base: Measurement, follow: Measurement) -> tuple[Any, Any]:
    lb = base.lesions[r.baseline_id - 1] if r.baseline_id is not None else None
    lf = follow.lesions[r.followup_id - 1] if r.followup_id is not None else None
    return lb, lf


def _paired_totals(rows: tuple[LesionChange, ...], base: Measurement, follow: Measurement,
                   region: str | None, scale2: float) -> tuple[float, float, float, float, int, int, float, float]:
    """Totals of a paired comparison from its rows (baseline area, follow-up raw area, their
    burdens, then the counts and areas of lesions found on a film where that film's
    segmentation had no label: baseline, follow-up (raw)).

    The baseline total stays the baseline's segmented total (the change is relative to it,
    as its summary says): a follow-up lesion found unlabelled on the baseline adds only its
    change (follow-up − baseline) to the follow-up total. A baseline lesion found unlabelled
    on the follow-up adds its area found there to the follow-up total. The one exception is
    a matched group over bone measured by one rule (``paired_matched_ratio``): when the
    baseline is its smaller side, its rows carry the baseline area that rule gives. A row
    belongs to the region of its baseline lesion (its follow-up lesion when there is none);
    burdens take each side's density grade (the other side's when the lesion is unlabelled
    there)."""
    ab = af = bb = bf = xb = xf = 0.0
    xnb = xnf = 0
    for r in rows:
        lb, lf = _row_lesions(r, base, follow)
        own = lb if lb is not None else lf
        if region is not None and own.region != region:
            continue
        a_b, a_f = r.area_baseline_mm2 or 0.0, r.area_followup_raw_mm2 or 0.0
        if r.relation is Relation.UNLABELLED and lb is None:
            # Found on the baseline, which did not label it: the baseline's total stays its
            # own (the reference of the change), the follow-up counts only the change.
            xb += a_b
            xnb += 1
            af += a_f - a_b * scale2
            bf += (a_f - a_b * scale2) * lf.density_grade
            continue
        ab += a_b
        af += a_f
        bb += a_b * (lb if lb is not None else lf).density_grade
        bf += a_f * (lf if lf is not None else lb).density_grade
        if r.relation is Relation.UNLABELLED:
            xf += a_f
            xnf += 1
    return ab, af, bb, bf, xnb, xnf, xb, xf


def _change_figures(base: Measurement, follow: Measurement, scale2: float,
                    region: str | None = None, rows: tuple[LesionChange, ...] | None = None) -> dict[str, Any]:
    # Counts stay the films' own (Δcount is the difference of the two summaries' counts);
    # lesions found unlabelled are counted apart.
    nb, nf = _count(base, region), _count(follow, region)
    if rows is not None:
        ab, af_raw, bb, bf_raw, xnb, xnf, xab, xaf = _paired_totals(rows, base, follow, region, scale2)
    else:
        ab, af_raw = _area(base, region), _area(follow, region)
        bb, bf_raw = _burden(base, region), _burden(follow, region)
        xnb = xnf = 0
        xab = xaf = 0.0
    af = af_raw / scale2
    bf = bf_raw / scale2
    return {
        "total_area_mm2": af - ab,
        "total_area_pct": _pct(ab, af),
        "lesion_count": nf - nb,
        "total_burden_pct": _pct(bb, bf),
        "total_burden_mm2": bf - bb,
        "total_area_baseline_mm2": ab,
        "total_area_followup_mm2": af,
        "total_area_followup_raw_mm2": af_raw,
        "lesion_count_baseline": nb,
        "lesion_count_followup": nf,
        "total_burden_baseline": bb,
        "total_burden_followup": bf,
        # what the films' own labels add up to (follow-up at the baseline's magnification)
        "segmented_area_baseline_mm2": _area(base, region),
        "segmented_area_followup_mm2": _area(follow, region) / scale2,
        # areas found where a film's segmentation had no label (paired measurement)
        "unlabelled_area_baseline_mm2": xab,
        "unlabelled_area_followup_mm2": xaf / scale2,
        "unlabelled_count_baseline": xnb,
        "unlabelled_count_followup": xnf,
    }


def _region_names(base: Measurement, follow: Measurement) -> list[str]:
    names: list[str] = []
    for m in (base, follow):
        for r in m.regions:
            if r.name not in names:
                names.append(r.name)
        for l in m.lesions:
            if l.region not in names:
                names.append(l.region)
    return names


def _region_rows(base: Measurement, follow: Measurement, scale2: float,
                 lesion_rows: tuple[LesionChange, ...] | None = None) -> tuple[dict[str, Any], ...]:
    rows = []
    for name in _region_names(base, follow):
        fig = _change_figures(base, follow, scale2, name, lesion_rows)
        rows.append({
            "name": name,
            "lesion_count_baseline": fig["lesion_count_baseline"],
            "lesion_count_followup": fig["lesion_count_followup"],
            "delta_lesion_count": fig["lesion_count"],
            "area_baseline_mm2": fig["total_area_baseline_mm2"],
            "area_followup_mm2": fig["total_area_followup_mm2"],
            "area_followup_raw_mm2": fig["total_area_followup_raw_mm2"],
            "delta_area_mm2": fig["total_area_mm2"],
            "delta_area_pct": fig["total_area_pct"],
            "burden_baseline": fig["total_burden_baseline"],
            "burden_followup": fig["total_burden_followup"],
            "delta_burden_pct": fig["total_burden_pct"],
        })
    return tuple(rows)


def _interval_days(base: Measurement, follow: Measurement) -> int | None:
    db, df = base.film.metadata.study_date, follow.film.metadata.study_date
    if db is None or df is None:
        return None
    days = (df - db).days
    if days < 0:
        warnings.warn(
            f"follow-up study date {df} is before the baseline's {db}: the change is reported "
            "from the film given as baseline; swap the films if that is not intended",
            CalcimageWarning, stacklevel=3,
        )
    return int(days)


# --------------------------------------------------------------------------------------------
# masks handed to the registration


def registration_mask(m: Measurement) -> np.ndarray | None:
    """Pixels of ``m`` the registration may use: all but the collimation and markers (they
    differ between films). Air is kept: it is flat and costs nothing, and the skin line next
    to it is the strongest stable edge. Lesions stay in: most change little and anchor the
    fit (a limb without bone has little else along its length); the registration's robust
    weights discount those that do change.

    The registration grows excluded areas by a margin (a penumbra), fills them and keeps
    pyramid pixels clear of them, so no margin is added here. Returns None when nothing is
    excluded.
    """
    shape = m.film.shape
    drop = np.zeros(shape, dtype=bool)
    excluded = dict(m.segmentation.excluded) if m.segmentation is not None else {}
    for name in ("collimation", "marker"):
        mask = excluded.get(name)
        if mask is not None and np.shape(mask) == shape:
            drop |= np.asarray(mask, dtype=bool)
    if not drop.any():
        return None
    return ~drop


def _resegmentable(m: Measurement) -> bool:
    """Whether ``m`` came from :func:`calcimage.measure` of a :func:`calcimage.segment` result
    with its bone mask (a hand-made labelling has no working scale and is kept as it is)."""
    seg = m.segmentation
    return (m.measure_params is not None and seg is not None and seg.scale_spacing_mm > 0
            and dict(seg.excluded).get("bone") is not None)


def _restore_shared_lesions(seg: Any, own: Measurement, other_lesions: np.ndarray) -> Any:
    """``seg`` (``own``'s film segmented again with added bone) with the lesions of ``own``
    back that the new segmentation lost and the other film shows at that place.

    The added bone may remove a false lesion that only its absence let through (the other
    film, which has the bone, shows nothing there); it must not remove a lesion both films
    show (its mapped outline can run through one and put it on the cortex band).
    """
    old = np.asarray(own.labels)
    new = np.asarray(seg.labels)
    n_old = int(old.max(initial=0))
    if n_old == 0:
        return seg
    # Counts over the old lesions' pixels only (no full-size temporaries: peak memory).
    at = np.flatnonzero(old)
    k_at = old.ravel()[at]
    size = np.bincount(k_at, minlength=n_old + 1)
    kept = np.bincount(k_at[new.ravel()[at] > 0], minlength=n_old + 1)
    seen = np.bincount(k_at[np.asarray(other_lesions).ravel()[at]], minlength=n_old + 1)
    back = [k for k in range(1, n_old + 1) if kept[k] < 0.5 * size[k] and seen[k] >= 0.2 * size[k]]
    if not back:
        return seg
    labels = new.astype(np.int32, copy=True)
    kinds = list(seg.kinds)
    restored = np.zeros(labels.size, bool)
    for k in back:
        sel = at[(k_at == k) & (labels.ravel()[at] == 0)]
        kinds.append(own.segmentation.kinds[k - 1])
        labels.ravel()[sel] = len(kinds)
        restored[sel] = True
    # A restored lesion the pixel model found stays marked as such (matching asks).
    old_added = own.segmentation.pixel_added
    pixel_added = seg.pixel_added
    if old_added is not None and (restored_added := restored.reshape(labels.shape) & old_added).any():
        pixel_added = restored_added if pixel_added is None else pixel_added | restored_added
    order = renumber_in_raster_order(labels)  # lesion k = label k, as segmentation numbers them
    logger.info("compare: %d lesion(s) both films show kept after segmenting again", len(back))
    return replace(seg, labels=labels, kinds=tuple(kinds[i] for i in order), pixel_added=pixel_added)


def share_bone(base: Measurement, follow: Measurement, reg: Registration,
               params: CompareParams = CompareParams()) -> tuple[Measurement, Measurement, tuple[str, ...]]:
    """Give both films of a pair the union of their bone masks.

    Each film's bone mask is mapped onto the other through ``reg``. A film on which the
    other's bone adds at least ``params.share_bone_min_mm2`` (in its body) is segmented again
    with it (``bone_hint``) and measured again with its own regions and parameters. A lesion
    that film had before and lost with the added bone is kept when the other film shows a
    lesion there (at least a fifth of it under the other film's mapped lesions): the added
    bone removes what only its absence let through, not what both films show.

    Returns
    -------
    tuple
        The baseline and follow-up measurements to compare, and which were segmented again
        (``"baseline"``, ``"followup"``).
    """
    from calcimage.match import warp_mask  # match imports this module
    from calcimage.measure import lean_measurement, remeasure
    from calcimage.segment import segment

    if not (_resegmentable(base) and _resegmentable(follow)):
        return base, follow, ()
    to_follow = replace(reg, matrix=reg.inverse_matrix())
    out = {"baseline": base, "followup": follow}
    shared = []
    for name, own, other, mapping in (("baseline", base, follow, reg), ("followup", follow, base, to_follow)):
        other_bone = np.asarray(dict(other.segmentation.excluded)["bone"], dtype=bool)
        if not other_bone.any():
            continue
        mapped = warp_mask(other_bone, mapping, own.film.shape)
        excluded = dict(own.segmentation.excluded)
        added = mapped & ~np.asarray(excluded["bone"], dtype=bool)
        for gone in ("outside_body", "collimation", "marker"):
            if excluded.get(gone) is not None:
                added &= ~np.asarray(excluded[gone], dtype=bool)
        sp = own.film.spacing_mm or (own.segmentation.scale_spacing_mm,) * 2
        added_mm2 = float(np.count_nonzero(added)) * sp[0] * sp[1]
        del added
        if added_mm2 < max(params.share_bone_min_mm2, 1e-9):
            continue
        logger.info("compare: the %s gains %.0f mm2 of the other film's bone: segmented again", name, added_mm2)
        seg = segment(own.film, own.segmentation.params, bone_hint=mapped)
        seg = _restore_shared_lesions(seg, own, warp_mask(np.asarray(other.labels) > 0, mapping, own.film.shape))
        # Comparing uses none of the working arrays: dropped at once (the other film may
        # be segmented next, and two full measurements would double the peak memory).
        out[name] = lean_measurement(remeasure(own, seg))
        del seg
        shared.append(name)
    return out["baseline"], out["followup"], tuple(shared)


# --------------------------------------------------------------------------------------------


def compare(base: Measurement, follow: Measurement, params: CompareParams = CompareParams()) -> Comparison:
    """Compare a follow-up film with its baseline.

    Parameters
    ----------
    base, follow
        Measured films (:func:`calcimage.measure`) of the same patient, side and view, both
        with a pixel spacing.
    params
        Registration, matching and category parameters.

    Returns
    -------
    Comparison
        Registration, one :class:`LesionChange` row per lesion (or per member of a merge or
        split group), total and per-region change, category and interval.

    Raises
    ------
    IncompatibleFilmsError
        The films must not be compared (see :func:`check_compatible`).
    RegistrationError
        The films do not align (quality below ``params.min_quality``).
    """
    # Imported here: register/match import this module's types.
    from calcimage.match import match_lesions
    from calcimage.register import register

    check_compatible(base, follow, params)
    reg = register(
        base.film, follow.film,
        base_mask=registration_mask(base),
        follow_mask=registration_mask(follow),
        params=params,
    )
    shared: tuple[str, ...] = ()
    if params.share_bone:
        base, follow, shared = share_bone(base, follow, reg, params)
    scale2 = float(reg.scale) ** 2
    rows = match_lesions(base, follow, reg, params)
    paired_rows = rows if params.paired else None
    change = _change_figures(base, follow, scale2, rows=paired_rows)
    outside = sum(1 for r in rows if r.outside_other_field)
    change["lesions_outside_common_field"] = outside
    if outside:
        warnings.warn(
            f"{outside} new or resolved lesion(s) lie outside the other film's field of view; "
            "their change is counted in the totals but is not real (see outside_other_field)",
            CalcimageWarning, stacklevel=2,
        )
    category = classify_change(change["total_area_pct"], change["total_area_baseline_mm2"],
                               change["total_area_followup_mm2"], params)
    days = _interval_days(base, follow)
    logger.info(
        "compare: scale %.4f, quality %.3f, area %.1f -> %.1f mm2 (%s %%), %s",
        reg.scale, reg.quality, change["total_area_baseline_mm2"], change["total_area_followup_mm2"],
        "n/a" if change["total_area_pct"] is None else f"{change['total_area_pct']:+.1f}", category.value,
    )
    return Comparison(
        baseline=base,
        followup=follow,
        registration=reg,
        lesions=rows,
        change=change,
        regions=_region_rows(base, follow, scale2, paired_rows),
        category=category,
        interval_days=days,
        params=params,
        interval_months=None if days is None else days / DAYS_PER_MONTH,
        bone_shared=shared,
    )
