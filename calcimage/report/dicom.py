"""DICOM results for PACS: a DICOM SEG and a Comprehensive SR (TID 1500) per measured film.

Entry points
------------
:func:`write_dicom_results`
    Writes ``S.seg.dcm`` (binary segmentation, one segment per lesion class present) and
    ``S.sr.dcm`` (Imaging Measurement Report, TID 1500) for one measured DICOM film.
:func:`dicom_skip_reason`
    Why a film gets no DICOM results (PNG/TIFF/JPEG input, no pixel spacing, no source file,
    missing UIDs), or None. :func:`write_dicom_results` warns with this reason and writes nothing.
:func:`build_tracking`
    Longitudinal identities: lesions matched by :func:`calcimage.compare` keep the same
    Tracking Identifier and Tracking UID in every SR of a patient, plus the time point
    (months since baseline) of each film.
:func:`write_dicom_for_pair`, :func:`write_dicom_for_outputs`
    What ``calcimage compare --dicom-out`` and ``measure``/``study --dicom-out`` call: the
    former from two measurements in memory, the latter from the results folders already
    written (:func:`measurement_from_outputs`), so films reused from a cache get objects too.

Both objects are built with highdicom. They belong to the source film's study (patient and
study modules are copied from the source image by highdicom, on purpose: see docs/pacs.md).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import io
import json
import logging
import os
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from skimage.measure import approximate_polygon, find_contours

from calcimage.errors import CalcimageError, CalcimageWarning, OutputError
from calcimage.film import Film
from calcimage.measure import Lesion, Measurement
from calcimage.report.atomic import atomic_path
from calcimage.segment import LesionKind

if TYPE_CHECKING:
    from calcimage.compare import Comparison

__all__ = [
    "TimePoint",
    "TrackingIdentity",
    "TrackingMap",
    "film_key",
    "time_points",
    "build_tracking",
    "dicom_skip_reason",
    "write_dicom_results",
    "write_dicom_for_outputs",
    "write_dicom_for_pair",
    "measurement_from_outputs",
    "lesion_outline",
    "SEG_SUFFIX",
    "SR_SUFFIX",
    "CODES",
]

logger = logging.getLogger(__name__)

SEG_SUFFIX = ".seg.dcm"
SR_SUFFIX = ".sr.dcm"
#: Series numbers of the derived series (kept far from the modality's own numbering).
SEG_SERIES_NUMBER = 9101
SR_SERIES_NUMBER = 9102
ALGORITHM_NAME = "calcimage"
MANUFACTURER = "calcimage project"
#: Fixed namespace: every UID calcimage derives is uuid5(namespace, text) as "2.25.<int>"
#: (ISO/IEC 9834-8), so the same input, parameters and version give the same UIDs.
_UID_NAMESPACE = uuid.UUID("0b6e8f8e-3c1e-5a59-9d3f-6b3d2c1a7c11")
#: Private coding scheme for the two concepts DICOM has no code for (PS3.16 8.2: "99" prefix).
PRIVATE_SCHEME = "99CALCIMAGE"
#: Most outline points one SCOORD can hold: GraphicData (FL, 8 bytes a point) must stay under
#: the 64 KiB length limit of explicit-VR elements.
MAX_OUTLINE_POINTS = 8000
#: lesions.csv rounds floats to this many decimals; SR numbers use the same rounding.
CSV_DECIMALS = 6
#: Average month length, for "months since baseline".
_DAYS_PER_MONTH = 365.25 / 12


def _uid(*parts: object) -> str:
    """A deterministic UUID-derived UID (``2.25.<int>``) from text parts."""
    text = "\x1f".join(str(p) for p in parts)
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, text).int}"


@dataclass(frozen=True)
class _Codes:
    """Coded concepts used in the SEG and SR (one place, so docs and tests can point at it)."""

    #: SegmentedPropertyCategory / finding category (CID 7150).
    category: Code = codes.SCT.MorphologicallyAbnormalStructure
    #: SegmentedPropertyType / finding type per class (CID 7151 has Nodule; Plaque is the
    #: SNOMED CT morphologic abnormality 1522000).
    nodule: Code = codes.SCT.Nodule
    plaque: Code = codes.SCT.Plaque
    #: SegmentedPropertyTypeModifier: both classes are calcified.
    calcified: Code = codes.SCT.Calcified
    #: Finding type of the film totals group: calcinosis as a whole.
    calcinosis: Code = codes.SCT.PathologicCalcification
    #: Algorithm family (CID 7162): calcimage thresholds a background-flattened film on its
    #: histogram (noise-scaled, Otsu, Yen, Li, triangle) - classical image processing, not AI.
    algorithm_family: Code = codes.cid7162.HistogramAnalysis
    procedure: Code = codes.SCT.PlainRadiography
    area: Code = codes.SCT.Area
    total: Code = codes.SCT.Total
    count: Code = codes.DCM.NumberOfCalcifications
    density_grade: Code = Code("CI0001", PRIVATE_SCHEME, "Calcinosis density grade")
    burden: Code = Code("CI0002", PRIVATE_SCHEME, "Calcinosis burden")
    mm2: Code = codes.UCUM.SquareMillimeter
    grade_unit: Code = Code("{grade}", "UCUM", "grade")
    count_unit: Code = Code("{lesions}", "UCUM", "lesions")
    months: Code = codes.UCUM.Month
    baseline_event: Code = codes.DCM.Baseline
    baseline_time_point: Code = codes.cid6146.Baseline


CODES = _Codes()
#: Declares the private scheme in the SR header (Coding Scheme Identification Sequence).
_PRIVATE_SCHEME_ITEM = hd.coding_schemes.CodingSchemeIdentificationItem(
    designator=PRIVATE_SCHEME, name="calcimage private codes", responsible_organization="calcimage project"
)

_KIND_CODE: dict[LesionKind, Code] = {LesionKind.NODULE: CODES.nodule, LesionKind.PLAQUE: CODES.plaque}
#: Segment colours (sRGB), matching nothing in particular but distinct: nodule orange, plaque cyan.
_KIND_RGB: dict[LesionKind, tuple[int, int, int]] = {
    LesionKind.NODULE: (255, 140, 0),
    LesionKind.PLAQUE: (0, 190, 255),
}


# --------------------------------------------------------------------------------------------
# Longitudinal identity


@dataclass(frozen=True)
class TimePoint:
    """Where a film sits in its patient's series (TID 1502 time point context).

    Attributes
    ----------
    index
        0 for the baseline, 1 for the first follow-up, ... (``TimePointOrder`` is index + 1).
    months_since_baseline
        Study date difference in months (days / 30.4375), or None when a date is missing.
    study_date
        The film's study date, if known.
    """

    index: int = 0
    months_since_baseline: float | None = 0.0
    study_date: _dt.date | None = None

    @property
    def label(self) -> str:
        """``T0`` for the baseline, ``T1``, ``T2`` ... for follow-ups."""
        return f"T{self.index}"


@dataclass(frozen=True)
class TrackingIdentity:
    """Tracking Identifier (human-readable text) and Tracking UID of one tracked finding."""

    identifier: str
    uid: str


@dataclass(frozen=True)
class TrackingMap:
    """Longitudinal identities of the lesions of one or more patients' films.

    Attributes
    ----------
    lesions
        ``(film_key, lesion_id) -> TrackingIdentity``; matched lesions share one identity.
    groups
        ``film_key -> film_key`` of the group's baseline film; class and film-total
        tracking UIDs derive from it so they too stay the same across time points.
    time_points
        ``film_key -> TimePoint``.
    """

    lesions: Mapping[tuple[str, int], TrackingIdentity] = field(default_factory=dict)
    groups: Mapping[str, str] = field(default_factory=dict)
    time_points: Mapping[str, TimePoint] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Own copies (plain dicts, so the map pickles to worker processes); treat as read-only.
        for name in ("lesions", "groups", "time_points"):
            object.__setattr__(self, name, dict(getattr(self, name)))

    def lesion(self, film: Film, lesion_id: int) -> TrackingIdentity:
        """Identity of lesion ``lesion_id`` of ``film``; its own identity when not mapped."""
        key = film_key(film)
        found = self.lesions.get((key, int(lesion_id)))
        if found is not None:
            return found
        tp = self.time_points.get(key, TimePoint())
        return _new_identity(key, int(lesion_id), tp.index)

    def group(self, film: Film) -> str:
        """Key of the baseline film of ``film``'s group (the film itself when not mapped)."""
        key = film_key(film)
        return self.groups.get(key, key)

    def time_point(self, film: Film) -> TimePoint | None:
        """Time point of ``film``, or None when it is not in the map."""
        return self.time_points.get(film_key(film))


def film_key(film: Film) -> str:
    """Stable key of a film: its SOP Instance UID, else its file hash, else its path."""
    if film.metadata.sop_instance_uid:
        return film.metadata.sop_instance_uid
    if film.sha256:
        return f"sha256:{film.sha256}"
    return f"path:{film.path}"


def _new_identity(key: str, lesion_id: int, index: int) -> TrackingIdentity:
    text = f"lesion {lesion_id}" if index == 0 else f"lesion T{index}-{lesion_id}"
    return TrackingIdentity(identifier=text, uid=_uid("lesion", key, lesion_id))


def time_points(measurements: Sequence[Measurement]) -> dict[str, TimePoint]:
    """Time points of one patient's films: ordered by study date, the earliest is baseline.

    Films without a study date come after dated ones, in the order given, and have
    ``months_since_baseline`` None.

    Parameters
    ----------
    measurements
        The measured films of one group (same patient, laterality and view).

    Returns
    -------
    dict
        ``film_key -> TimePoint``.
    """
    return _time_points(measurements)


def _time_points(measurements: Sequence[Measurement]) -> dict[str, TimePoint]:
    unique: dict[str, Film] = {}
    for m in measurements:
        unique.setdefault(film_key(m.film), m.film)
    order = sorted(
        enumerate(unique.items()),
        key=lambda item: (item[1][1].metadata.study_date is None, item[1][1].metadata.study_date or _dt.date.min, item[0]),
    )
    result: dict[str, TimePoint] = {}
    baseline_date: _dt.date | None = None
    for index, (_, (key, film)) in enumerate(order):
        date = film.metadata.study_date
        if index == 0:
            baseline_date = date
        months = None
        if date is not None and baseline_date is not None:
            months = round((date - baseline_date).days / _DAYS_PER_MONTH, 2)
        result[key] = TimePoint(index=index, months_since_baseline=months, study_date=date)
    return result


#: What :func:`build_tracking` accepts per compared pair: a :class:`~calcimage.compare.Comparison`,
#: or ``(baseline, followup, rows)`` with rows as :class:`~calcimage.compare.LesionChange` or as
#: the ``lesions`` dicts of comparison.json.
PairLike = Union["Comparison", tuple[Measurement, Measurement, Sequence[Any]]]


@dataclass(frozen=True)
class _Pair:
    base: Measurement
    follow: Measurement
    #: (baseline_id, followup_id, weight) of every matched row.
    matches: tuple[tuple[int, int, float], ...]


def _row_value(row: Any, name: str) -> Any:
    return row.get(name) if isinstance(row, Mapping) else getattr(row, name, None)


def _as_pair(item: PairLike) -> _Pair:
    if isinstance(item, tuple):
        base, follow, rows = item
    else:
        base, follow, rows = item.baseline, item.followup, item.lesions
    matches = []
    for row in rows:
        b, f = _row_value(row, "baseline_id"), _row_value(row, "followup_id")
        if b is None or f is None:
            continue
        # Rows of a merge/split carry each lesion's share of the group area: the largest
        # share decides who keeps an identity.
        weight = float(_row_value(row, "area_baseline_mm2") or 0.0) + float(_row_value(row, "area_followup_mm2") or 0.0)
        matches.append((int(b), int(f), weight))
    return _Pair(base, follow, tuple(matches))


def build_tracking(
    comparisons: Sequence[PairLike],
    *,
    time_points: Mapping[str, TimePoint] | None = None,
) -> TrackingMap:
    """Longitudinal identities from comparisons, chained back to each group's baseline.

    Films linked by comparisons form a group; within a group films are ordered by study
    date (:func:`time_points`) unless ``time_points`` says otherwise. Every baseline lesion
    k gets ``"lesion k"`` and a UID derived from the baseline's SOP Instance UID and k. A
    follow-up lesion matched to an earlier lesion inherits that lesion's identity; when
    several matches compete (merges, splits) the match with the larger area share wins and
    the others get new identities, so an identity appears at most once per film. An
    unmatched lesion first seen at time point i gets ``"lesion Ti-k"``. Comparisons may be
    baseline→each follow-up (as ``calcimage study`` does) or a chain (T0→T1→T2); a follow-up
    compared with several earlier films inherits from the earliest of them.

    Parameters
    ----------
    comparisons
        Results of :func:`calcimage.compare`, or ``(baseline, followup, rows)`` triples with
        rows as LesionChange objects or comparison.json ``lesions`` dicts; rows with both
        ids are matches.
    time_points
        ``film_key -> TimePoint`` to use instead of ordering by study date (e.g. when only
        one pair of a longer series is at hand: give the follow-up its real index).

    Returns
    -------
    TrackingMap
        Identities for every lesion of every film in ``comparisons``, each film's group
        baseline, and each film's time point.
    """
    pairs = [_as_pair(c) for c in comparisons]
    films: dict[str, Measurement] = {}
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for pair in pairs:
        for m in (pair.base, pair.follow):
            key = film_key(m.film)
            films.setdefault(key, m)
            parent.setdefault(key, key)
        a, b = find(film_key(pair.base.film)), find(film_key(pair.follow.film))
        if a != b:
            parent[max(a, b)] = min(a, b)

    components: dict[str, list[Measurement]] = {}
    for key, m in films.items():
        components.setdefault(find(key), []).append(m)
    tps: dict[str, TimePoint] = {}
    for members in components.values():
        tps.update(_time_points(members))
    if time_points is not None:
        tps.update({k: v for k, v in time_points.items() if k in films})

    incoming: dict[str, list[_Pair]] = {}
    for pair in pairs:
        incoming.setdefault(film_key(pair.follow.film), []).append(pair)

    lesions: dict[tuple[str, int], TrackingIdentity] = {}
    groups: dict[str, str] = {}
    for key in sorted(films, key=lambda k: (tps[k].index, k)):
        m, tp = films[key], tps[key]
        earlier = [p for p in incoming.get(key, []) if tps[film_key(p.base.film)].index < tp.index]
        assigned: dict[int, TrackingIdentity] = {}
        if earlier:
            pair = min(earlier, key=lambda p: (tps[film_key(p.base.film)].index, film_key(p.base.film)))
            base_key = film_key(pair.base.film)
            groups[key] = groups.get(base_key, base_key)
            assigned = _inherit(pair, base_key, lesions)
        else:
            groups[key] = key
        for lesion in m.lesions:
            identity = assigned.get(lesion.lesion_id) or _new_identity(key, lesion.lesion_id, tp.index)
            lesions[(key, lesion.lesion_id)] = identity
    return TrackingMap(lesions=lesions, groups=groups, time_points=tps)


def _inherit(
    pair: _Pair, base_key: str, known: Mapping[tuple[str, int], TrackingIdentity]
) -> dict[int, TrackingIdentity]:
    """Follow-up lesion id -> inherited identity, at most one follow-up lesion per identity."""
    base_ids = {l.lesion_id for l in pair.base.lesions}
    follow_ids = {l.lesion_id for l in pair.follow.lesions}
    candidates = []
    for base_id, follow_id, weight in pair.matches:
        if base_id not in base_ids or follow_id not in follow_ids:
            logger.warning(
                "comparison row %s -> %s names a lesion the films do not have; ignored", base_id, follow_id
            )
            continue
        candidates.append((-weight, base_id, follow_id))
    assigned: dict[int, TrackingIdentity] = {}
    used: set[str] = set()
    for _, base_id, follow_id in sorted(candidates):
        identity = known[(base_key, base_id)]
        if follow_id in assigned or identity.uid in used:
            continue
        assigned[follow_id] = identity
        used.add(identity.uid)
    return assigned


# --------------------------------------------------------------------------------------------
# Skipping, reading the source


def dicom_skip_reason(measurement: Measurement) -> str | None:
    """Why ``measurement`` gets no DICOM SEG/SR, or None when it can have them.

    A film is skipped when it was not read from a DICOM file (PNG/TIFF/JPEG have no UIDs to
    reference), has no pixel spacing (areas in mm² cannot be reported), or lacks the SOP
    Instance, Series or Study UID a reference needs.
    """
    film = measurement.film
    meta = film.metadata
    if meta.source_format != "dicom":
        return (
            f"{film.name}: not a DICOM film ({meta.source_format}); DICOM SEG/SR reference a "
            "DICOM source image, so none are written"
        )
    if film.path is None:
        return f"{film.name}: the film has no source file to reference; no DICOM SEG/SR written"
    if film.spacing_mm is None:
        return (
            f"{film.name}: no pixel spacing, so areas in mm² cannot be reported; no DICOM SEG/SR "
            "written (give the spacing: --spacing MM, or calcimage.load(path, spacing_mm=...))"
        )
    missing = [
        name
        for name, value in (
            ("SOPInstanceUID", meta.sop_instance_uid),
            ("SeriesInstanceUID", meta.series_instance_uid),
            ("StudyInstanceUID", meta.study_instance_uid),
            ("SOPClassUID", meta.sop_class_uid),
        )
        if not value
    ]
    if missing:
        return f"{film.name}: the source DICOM lacks {', '.join(missing)}; no DICOM SEG/SR written"
    return None


def _read_source(film: Film) -> Dataset:
    """The film's DICOM header, re-read from its file (the file must not have changed)."""
    assert film.path is not None
    try:
        data = film.path.read_bytes()
    except OSError as exc:
        raise OutputError(f"{film.path}: cannot re-read the source DICOM for SEG/SR: {exc.strerror or exc}") from None
    if film.sha256 and hashlib.sha256(data).hexdigest() != film.sha256:
        raise OutputError(
            f"{film.path}: the file changed since it was measured; measure it again before "
            "writing DICOM SEG/SR"
        )
    try:
        with warnings.catch_warnings():
            # pydicom's remarks on odd element values were already logged by the loader.
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    except Exception as exc:  # pydicom raises many types on odd files
        raise OutputError(f"{film.path}: cannot re-read the source DICOM for SEG/SR: {exc}") from None
    if "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    if "FrameOfReferenceUID" in ds and not ("ImageOrientationPatient" in ds and "ImagePositionPatient" in ds):
        # A projection radiograph may name a frame of reference without any plane geometry;
        # a SEG in that frame would need positions the film does not have. Build the SEG on
        # the source pixel grid instead (the no-frame-of-reference form), on this copy only.
        del ds.FrameOfReferenceUID
    blanked = _blank_invalid(ds)
    if blanked:
        warnings.warn(
            f"{film.name}: invalid {', '.join(blanked)} in the source DICOM left empty in the SEG/SR "
            "(the source file is not changed)",
            CalcimageWarning,
            stacklevel=3,
        )
    return ds


#: Patient and study attributes highdicom copies from the source into the SEG and SR.
_COPIED = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
    "StudyDate", "StudyTime", "ReferringPhysicianName",
)


def _blank_invalid(ds: Dataset) -> list[str]:
    """Empty copied attributes whose value is invalid for its VR (e.g. PatientBirthDate
    00000000, a 56-character AccessionNumber), which highdicom would refuse, and add missing
    ones empty; return the names of those blanked. All copied attributes are type 2, so empty
    is valid."""
    from pydicom import config
    from pydicom.valuerep import DA, TM, validate_value

    blanked = []
    for keyword in _COPIED:
        if keyword not in ds:
            # Type 2 means "present, may be empty"; real films often omit them anyway, and
            # highdicom reads them as attributes. Add them empty, on this copy only.
            setattr(ds, keyword, "")
            continue
        elem = ds[keyword]
        value = elem.value
        if value is None or value == "":
            continue
        try:
            validate_value(elem.VR, value, config.RAISE)
            if elem.VR == "DA":
                DA(str(value))
            elif elem.VR == "TM":
                TM(str(value))
            if keyword == "PatientSex" and str(value) not in ("M", "F", "O"):
                raise ValueError(f"PatientSex {value!r}")
        except Exception:  # pydicom raises ValueError or its own types; any means invalid
            elem.value = ""
            blanked.append(keyword)
    return blanked


# --------------------------------------------------------------------------------------------
# Outline


def lesion_outline(mask: np.ndarray) -> np.ndarray:
    """Closed outline of a lesion mask as DICOM SCOORD points ``(x=col, y=row)``.

    The polygon runs through the midpoints between boundary pixels and the background
    (marching squares at level 0.5, diagonal neighbours connected), so the centres of all
    pixels of a hole-free lesion lie inside it and no background pixel centre does. DICOM
    pixel coordinates put (0, 0) at the top-left corner of the top-left pixel, so a pixel
    centre (row, col) is (x=col + 0.5, y=row + 0.5). Collinear points are dropped; an outline
    of more than :data:`MAX_OUTLINE_POINTS` points is simplified (Douglas-Peucker, tolerance
    doubled from 0.25 px until it fits), the one case where it is not exact. Holes are not
    outlined; of several parts, the largest is.

    Parameters
    ----------
    mask
        Boolean (rows, cols) mask of one lesion.

    Returns
    -------
    numpy.ndarray
        float32 (n, 2) array of (x, y) points; the first point is repeated at the end.
    """
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("lesion_outline needs a non-empty mask")
    r0, c0 = int(rows.min()), int(cols.min())
    crop = np.zeros((int(rows.max()) - r0 + 3, int(cols.max()) - c0 + 3), dtype=np.float32)
    crop[1:-1, 1:-1] = mask[r0 : int(rows.max()) + 1, c0 : int(cols.max()) + 1]
    contours = find_contours(crop, 0.5, fully_connected="high")

    def enclosed(c: np.ndarray) -> float:
        return abs(float(np.dot(c[:-1, 0], c[1:, 1]) - np.dot(c[1:, 0], c[:-1, 1]))) / 2

    best = max(contours, key=enclosed)
    # Drop collinear points (straight runs along pixel edges): same polygon, far fewer points.
    simple = approximate_polygon(best, tolerance=1e-6)
    tolerance = 0.25
    while len(simple) > MAX_OUTLINE_POINTS:
        # GraphicData (FL) must fit an explicit-VR element (< 64 KiB): simplify huge outlines.
        simple = approximate_polygon(best, tolerance=tolerance)
        tolerance *= 2
    if len(simple) != len(best) and tolerance > 0.25:
        logger.debug("outline of %d points simplified to %d (tolerance %.2f px)", len(best), len(simple), tolerance / 2)
    best = simple
    row = best[:, 0] + (r0 - 1)
    col = best[:, 1] + (c0 - 1)
    points = np.stack([col + 0.5, row + 0.5], axis=1).astype(np.float32)
    if not np.array_equal(points[0], points[-1]):
        points = np.vstack([points, points[:1]])
    return points


# --------------------------------------------------------------------------------------------
# Writing


def _atomic_write(ds: Dataset, path: Path, inputs: Sequence[Path]) -> None:
    """Save ``ds`` as a DICOM file (preamble + file meta) under a temporary name, then rename."""
    resolved = path.resolve()
    if any(resolved == Path(p).resolve() for p in inputs):
        raise OutputError(f"{path}: refusing to overwrite an input file; choose another output folder")
    try:
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"{path}: cannot write DICOM output: {exc.strerror or exc}") from None


def _params_text(measurement: Measurement) -> dict[str, str]:
    """The parameters the film was measured with, as JSON text per stage."""
    params = dict(measurement.params or {})
    if "segment" not in params:  # a hand-built Measurement: take the segmentation's own
        params = {"segment": dataclasses.asdict(measurement.segmentation.params), "measure": params}
    return {str(k): json.dumps(v, sort_keys=True, default=str) for k, v in params.items()}


def _value(x: float | int) -> float:
    """A number as lesions.csv writes it (rounded to 6 decimals), so SR and CSV agree."""
    rounded = round(float(x), CSV_DECIMALS)
    return 0.0 if rounded == 0 else rounded


def _digest(*parts: object) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else repr(part).encode())
        h.update(b"\x1f")
    return h.hexdigest()


def _check(measurement: Measurement) -> None:
    labels = np.asarray(measurement.labels)
    if labels.shape != measurement.film.shape:
        raise ValueError(f"labels shape {labels.shape} differs from the film's {measurement.film.shape}")
    ids = [l.lesion_id for l in measurement.lesions]
    if ids != list(range(1, len(ids) + 1)):
        raise ValueError(f"lesion ids must be 1..n in order, got {ids[:10]}")
    if labels.size and int(labels.max(initial=0)) > len(ids):
        raise ValueError(f"labels hold label {int(labels.max())} but there are {len(ids)} lesions")


def _build_seg(
    measurement: Measurement,
    source: Dataset,
    tracking: TrackingMap,
    version: str,
) -> tuple[hd.seg.Segmentation, dict[LesionKind, int]] | None:
    """The SEG and ``kind -> segment number``; None when the film has no lesion."""
    labels = np.asarray(measurement.labels)
    kinds = [k for k in LesionKind if any(l.kind == k for l in measurement.lesions)]
    if not kinds:
        return None
    group = tracking.group(measurement.film)
    params = _params_text(measurement)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME, family=CODES.algorithm_family, version=version, parameters=params
    )
    descriptions = []
    masks = []
    for number, kind in enumerate(kinds, start=1):
        desc = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"calcinosis {kind.value}",
            segmented_property_category=CODES.category,
            segmented_property_type=_KIND_CODE[kind],
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_id=f"calcinosis {kind.value}s",
            tracking_uid=_uid("class", group, kind.value),
            display_color=hd.color.CIELabColor.from_rgb(*_KIND_RGB[kind]),
        )
        # The modifier belongs inside the Segmented Property Type Code Sequence item (PS3.3
        # C.8.20.2, Segment Description macro), not beside it.
        desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            hd.sr.CodedConcept.from_code(CODES.calcified)
        ]
        descriptions.append(desc)
        ids = [l.lesion_id for l in measurement.lesions if l.kind == kind]
        masks.append(np.isin(labels, ids))
    pixel_array = np.stack(masks, axis=-1)[np.newaxis]
    src_uid = measurement.film.metadata.sop_instance_uid
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=_uid("seg-series", source.SeriesInstanceUID, version),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=_uid("seg", src_uid, version, _digest(labels.tobytes(), kinds, params, group)),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=ALGORITHM_NAME,
        software_versions=version,
        device_serial_number="n/a",
        content_label="CALCINOSIS",
        content_description="calcinosis (calcified nodules and plaques) found by calcimage",
        series_description="calcimage calcinosis SEG",
    )
    if "FrameOfReferenceUID" not in seg:
        # A projection radiograph has no frame of reference: the SEG frame is the source
        # pixel grid (Derivation Image, Spatial Locations Preserved YES). highdicom 0.28 then
        # writes a Pixel Measures item with PixelSpacing only, which its own reader rejects
        # (it requires SliceThickness); the item is optional without a frame of reference
        # (PS3.3 A.51.5), so drop it to keep the SEG readable by highdicom.
        shared = seg.SharedFunctionalGroupsSequence[0]
        if "PixelMeasuresSequence" in shared:
            del shared.PixelMeasuresSequence
        # Without plane orientation/position, General Image needs PatientOrientation (type 2C):
        # the SEG frame is the film's pixel grid, so it is the film's.
        orientation = source.get("PatientOrientation")
        seg.PatientOrientation = orientation if orientation and len(orientation) == 2 else ""
    return seg, {kind: number for number, kind in enumerate(kinds, start=1)}


def _time_point_context(tp: TimePoint) -> hd.sr.TimePointContext:
    offset = None
    if tp.months_since_baseline is not None:
        offset = hd.sr.LongitudinalTemporalOffsetFromEvent(
            value=tp.months_since_baseline, unit=CODES.months, event_type=CODES.baseline_event
        )
    return hd.sr.TimePointContext(
        time_point=tp.label,
        time_point_type=CODES.baseline_time_point if tp.index == 0 else None,
        time_point_order=tp.index + 1,
        subject_time_point_identifier=tp.study_date.isoformat() if tp.study_date else None,
        temporal_offset_from_event=offset,
    )


def _lesion_measurements(lesion: Lesion) -> list[hd.sr.Measurement]:
    assert lesion.area_mm2 is not None
    return [
        hd.sr.Measurement(name=CODES.area, value=_value(lesion.area_mm2), unit=CODES.mm2),
        hd.sr.Measurement(name=CODES.density_grade, value=int(lesion.density_grade), unit=CODES.grade_unit),
        hd.sr.Measurement(name=CODES.burden, value=_value(lesion.burden), unit=CODES.mm2),
    ]


def _total_measurements(lesions: Sequence[Lesion]) -> list[hd.sr.Measurement]:
    return [
        hd.sr.Measurement(
            name=CODES.area,
            value=_value(sum(l.area_mm2 or 0.0 for l in lesions)),
            unit=CODES.mm2,
            derivation=CODES.total,
        ),
        hd.sr.Measurement(name=CODES.count, value=len(lesions), unit=CODES.count_unit),
        hd.sr.Measurement(
            name=CODES.burden,
            value=_value(sum(l.burden for l in lesions)),
            unit=CODES.mm2,
            derivation=CODES.total,
        ),
    ]


def _build_sr(
    measurement: Measurement,
    source: Dataset,
    seg: hd.seg.Segmentation | None,
    segment_numbers: Mapping[LesionKind, int],
    tracking: TrackingMap,
    tp: TimePoint,
    version: str,
) -> hd.sr.ComprehensiveSR:
    film = measurement.film
    labels = np.asarray(measurement.labels)
    group = tracking.group(film)
    # The parameters are recorded once, in the film totals group (and in the SEG); repeating
    # them in every lesion group would multiply the report's size.
    algorithm = hd.sr.AlgorithmIdentification(name=ALGORITHM_NAME, version=version, family=CODES.algorithm_family)
    algorithm_with_params = hd.sr.AlgorithmIdentification(
        name=ALGORITHM_NAME,
        version=version,
        parameters=[f"{k}={v}" for k, v in _params_text(measurement).items()],
        family=CODES.algorithm_family,
    )
    tpc = _time_point_context(tp)
    src_class, src_uid = str(source.SOPClassUID), str(source.SOPInstanceUID)
    groups: list = []

    # One TID 1410 group per lesion, its outline on the source image.
    slices = _lesion_slices(labels, len(measurement.lesions))
    for lesion in measurement.lesions:
        identity = tracking.lesion(film, lesion.lesion_id)
        window = slices[lesion.lesion_id - 1]
        local = labels[window] == lesion.lesion_id
        outline = lesion_outline(local)
        outline[:, 0] += window[1].start
        outline[:, 1] += window[0].start
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=outline,
            source_image=hd.sr.SourceImageForRegion(src_class, src_uid),
        )
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=identity.uid, identifier=identity.identifier),
                referenced_region=region,
                time_point_context=tpc,
                finding_type=_KIND_CODE[lesion.kind],
                finding_category=CODES.category,
                algorithm_id=algorithm,
                measurements=_lesion_measurements(lesion),
            )
        )

    # One TID 1410 group per class, referencing that class's SEG segment.
    if seg is not None:
        frames = _segment_frames(seg)
        for kind, number in segment_numbers.items():
            members = [l for l in measurement.lesions if l.kind == kind]
            ref = hd.sr.ReferencedSegmentationFrame(
                sop_class_uid=str(seg.SOPClassUID),
                sop_instance_uid=str(seg.SOPInstanceUID),
                frame_number=frames[number],
                segment_number=number,
                source_image=hd.sr.SourceImageForSegmentation(src_class, src_uid),
            )
            # The image reference macro allows a frame number or a segment number, not both
            # (PS3.3 Table 10-3); highdicom writes both. Each SEG frame holds one segment, so
            # the frame number alone identifies it; the segment number is dropped.
            del ref[0].ReferencedSOPSequence[0].ReferencedSegmentNumber
            groups.append(
                hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=hd.sr.TrackingIdentifier(
                        uid=_uid("class", group, kind.value), identifier=f"calcinosis {kind.value}s"
                    ),
                    referenced_segment=ref,
                    time_point_context=tpc,
                    finding_type=_KIND_CODE[kind],
                    finding_category=CODES.category,
                    algorithm_id=algorithm,
                    measurements=_total_measurements(members),
                )
            )

    # Film totals (TID 1501).
    groups.append(
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=_uid("total", group), identifier="calcinosis total"),
            time_point_context=tpc,
            finding_type=CODES.calcinosis,
            finding_category=CODES.category,
            algorithm_id=algorithm_with_params,
            measurements=_total_measurements(measurement.lesions),
            source_images=[hd.sr.SourceImageForMeasurementGroup(src_class, src_uid)],
        )
    )

    observer = hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_uid("device", ALGORITHM_NAME),
            name=ALGORITHM_NAME,
            manufacturer_name=MANUFACTURER,
            model_name=f"{ALGORITHM_NAME} {version}",
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=CODES.procedure,
        imaging_measurements=groups,
        referenced_images=[source] if _library_ready(source) else None,
    )
    evidence = [source] + ([seg] if seg is not None else [])
    content_digest = _digest(
        labels.tobytes(),
        [dataclasses.astuple(l) for l in measurement.lesions],
        _params_text(measurement),
        [tracking.lesion(film, l.lesion_id) for l in measurement.lesions],
        group,
        tp,
        seg.SOPInstanceUID if seg is not None else None,
    )
    return hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=report,
        series_instance_uid=_uid("sr-series", source.SeriesInstanceUID, version),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=_uid("sr", src_uid, version, content_digest),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description="calcimage calcinosis report",
        coding_schemes=[_PRIVATE_SCHEME_ITEM],
    )


def _library_ready(source: Dataset) -> bool:
    """Whether highdicom can describe the source in the (optional) TID 1600 Image Library.

    For projection radiographs it needs PatientOrientation (two values) and
    ImagerPixelSpacing; many films lack one, and the library is then left out.
    """
    modality = str(source.get("Modality", ""))
    if "Rows" not in source or "Columns" not in source:
        return False
    if modality in ("CT", "MR", "PT"):  # highdicom's cross-sectional descriptors
        needed = ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "SliceThickness")
        return all(source.get(k) not in (None, "") for k in needed)
    if modality in ("CR", "DX", "IO", "MG", "PX", "RF", "RG", "XA"):  # projection descriptors
        orientation = source.get("PatientOrientation")
        spacing = source.get("ImagerPixelSpacing")
        return bool(orientation) and len(orientation) == 2 and bool(spacing) and len(spacing) == 2
    return True


def _lesion_slices(labels: np.ndarray, n: int) -> list[tuple[slice, slice]]:
    from scipy.ndimage import find_objects

    found = find_objects(labels, max_label=n)
    missing = [i + 1 for i, s in enumerate(found) if s is None]
    if missing:
        raise ValueError(f"lesions {missing[:10]} have no pixels in the label image")
    return found  # type: ignore[return-value]


def _segment_frames(seg: Dataset) -> dict[int, int]:
    """Segment number -> (1-based) frame number holding it."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "SegmentIdentificationSequence" in shared:  # one segment: identified once for all frames
        return {int(shared.SegmentIdentificationSequence[0].ReferencedSegmentNumber): 1}
    frames: dict[int, int] = {}
    for index, item in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        frames.setdefault(number, index)
    return frames


def write_dicom_results(
    measurement: Measurement,
    out_dir: str | os.PathLike[str],
    *,
    tracking: TrackingMap | None = None,
    timepoint: TimePoint | None = None,
    stem: str | None = None,
) -> list[Path]:
    """Write a DICOM SEG and a Comprehensive SR (TID 1500) for one measured DICOM film.

    Files: ``out_dir/S.seg.dcm`` and ``out_dir/S.sr.dcm``. A film without lesions gets only
    the SR (a SEG needs at least one segment; a SEG left by an earlier run is removed).
    Films that cannot have DICOM results (see :func:`dicom_skip_reason`) are skipped with a
    :class:`~calcimage.errors.CalcimageWarning` naming the reason, and nothing is written.

    Parameters
    ----------
    measurement
        Result of :func:`calcimage.measure` for a film loaded from a DICOM file.
    out_dir
        Folder to write into; created when missing.
    tracking
        Longitudinal identities from :func:`build_tracking`; without it every lesion is
        its own tracked finding (``lesion k``) and the film is its own baseline.
    timepoint
        The film's time point; defaults to ``tracking``'s entry for the film, else baseline.
    stem
        File name stem S; defaults to the film's file stem (pass a fixed one where file
        names may carry patient names).

    Returns
    -------
    list of Path
        Paths written (SEG first, then SR); empty when the film was skipped.

    Raises
    ------
    OutputError
        The source file changed since it was measured, cannot be re-read, or an output
        cannot be written (or would overwrite an input).
    """
    reason = dicom_skip_reason(measurement)
    if reason is not None:
        logger.info("DICOM SEG/SR skipped: %s", reason)
        warnings.warn(reason, CalcimageWarning, stacklevel=2)
        return []
    return _write(measurement, Path(out_dir), tracking=tracking, timepoint=timepoint, stem=stem)


def _write(
    measurement: Measurement,
    out: Path,
    *,
    tracking: TrackingMap | None,
    timepoint: TimePoint | None,
    stem: str | None,
) -> list[Path]:
    _check(measurement)
    from calcimage import __version__

    film = measurement.film
    stem = stem or film.name
    tracking = tracking if tracking is not None else TrackingMap()
    tp = timepoint or tracking.time_point(film) or TimePoint(study_date=film.metadata.study_date)
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            return _build_and_save(measurement, out, tracking, tp, stem, __version__)
    finally:
        _pass_on(caught, film.name)  # after the catch is lifted, so re-emitted warnings escape


def _build_and_save(
    measurement: Measurement, out: Path, tracking: TrackingMap, tp: TimePoint, stem: str, version: str
) -> list[Path]:
    film = measurement.film
    source = _read_source(film)
    built = _build_seg(measurement, source, tracking, version)
    seg, segment_numbers = built if built is not None else (None, {})
    sr = _build_sr(measurement, source, seg, segment_numbers, tracking, tp, version)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create the DICOM output folder: {exc.strerror or exc}") from None
    inputs = [film.path] if film.path is not None else []
    written: list[Path] = []
    seg_path = out / f"{stem}{SEG_SUFFIX}"
    if seg is not None:
        _atomic_write(seg, seg_path, inputs)
        written.append(seg_path)
    else:
        logger.info("%s: no lesions, so no DICOM SEG (a SEG needs a segment); SR written", film.name)
        if seg_path.is_file() and seg_path.resolve() not in {p.resolve() for p in inputs}:
            seg_path.unlink()  # an earlier run's SEG no report references any more
    sr_path = out / f"{stem}{SR_SUFFIX}"
    _atomic_write(sr, sr_path, inputs)
    written.append(sr_path)
    return written


def _pass_on(caught: Sequence[warnings.WarningMessage], name: str) -> None:
    """Re-emit calcimage's own warnings; log pydicom's and highdicom's remarks once each.

    Those remarks are about values copied from the source film (a one-part PatientName, an
    invalid StudyInstanceUID that every reference must repeat): the SEG/SR cannot fix them,
    so they are logged (INFO) rather than alarming the user once per reference.
    """
    seen: set[str] = set()
    for w in caught:
        if issubclass(w.category, CalcimageWarning):
            warnings.warn(w.message, w.category, stacklevel=4)
            continue
        text = " ".join(str(w.message).split())
        if text not in seen:
            seen.add(text)
            logger.info("%s: DICOM SEG/SR: %s: %s", name, w.category.__name__, text)


# --------------------------------------------------------------------------------------------
# From the CLI's output folders


def measurement_from_outputs(source: str | os.PathLike[str], folder: str | os.PathLike[str]) -> Measurement:
    """Rebuild a film's :class:`~calcimage.measure.Measurement` from its results folder.

    Reads ``summary.json``, ``labels.png`` and ``lesions.csv`` written by ``calcimage
    measure``/``study`` and loads the source film again (with the spacing the run used), so
    DICOM results can be written after the fact - also for films a rerun reused - without
    segmenting again. Lesion values are those of lesions.csv.

    Parameters
    ----------
    source
        The film file that was measured.
    folder
        Its results folder (holding summary.json, labels.png, lesions.csv).

    Returns
    -------
    Measurement
        With ``labels`` and ``lesions`` from the files, ``params`` from summary.json and no
        region totals.

    Raises
    ------
    OutputError
        A results file is missing or unreadable, or the source file is not the one measured.
    """
    import csv

    import cv2

    from calcimage.errors import CalcimageError
    from calcimage.io.load import load
    from calcimage.measure import LESION_COLUMNS
    from calcimage.segment import SegmentParams, Segmentation

    folder = Path(folder)
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        with open(folder / "lesions.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        labels = cv2.imread(str(folder / "labels.png"), cv2.IMREAD_UNCHANGED)
    except (OSError, ValueError) as exc:
        raise OutputError(f"{folder}: cannot read the measured results for DICOM SEG/SR: {exc}") from None
    if labels is None or labels.ndim != 2:
        raise OutputError(f"{folder}/labels.png: not a single-channel label image")
    spacing = summary.get("spacing_mm") if summary.get("spacing_source") == "user" else None
    try:
        film = load(source, spacing_mm=tuple(spacing) if spacing else None)
    except CalcimageError as exc:
        raise OutputError(f"{source}: cannot load the film again for DICOM SEG/SR: {exc}") from None
    if summary.get("sha256") and summary["sha256"] != film.sha256:
        raise OutputError(f"{source}: the file changed since it was measured into {folder}; measure it again")

    def number(text: str, kind: type = float) -> Any:
        return None if text in ("", None) else kind(float(text)) if kind is int else kind(text)

    ints = {"lesion_id", "area_px", "density_grade"}
    lesions = []
    for row in rows:
        values: dict[str, Any] = {}
        for column in LESION_COLUMNS:
            text = row.get(column, "")
            if column == "region":
                values[column] = text
            elif column == "kind":
                values[column] = LesionKind(text)
            else:
                values[column] = number(text, int if column in ints else float)
        lesions.append(Lesion(**values))
    labels = labels.astype(np.int32)
    seg = Segmentation(
        labels=labels,
        kinds=tuple(l.kind for l in lesions),
        threshold=float("nan"),
        threshold_low=float("nan"),
        flattened=np.zeros((1, 1), np.float32),
        params=SegmentParams(),
    )
    return Measurement(
        film=film, segmentation=seg, labels=labels, lesions=tuple(lesions), regions=(),
        params=dict(summary.get("params") or {}),
    )


def write_dicom_for_outputs(
    out_dir: str | os.PathLike[str],
    films: Sequence[tuple[str | os.PathLike[str], str]],
    pairs: Sequence[tuple[str, str, str]] = (),
    *,
    stem: str = "calcinosis",
) -> tuple[list[Path], list[str]]:
    """DICOM SEG + SR for every DICOM film of a ``calcimage measure``/``study`` results folder.

    Each film's objects go into its own results folder as ``calcinosis.seg.dcm`` and
    ``calcinosis.sr.dcm``. Lesions matched by a pair's comparison.json keep their tracking
    identity; time points come from the study dates of the films linked by pairs.

    Parameters
    ----------
    out_dir
        The results folder.
    films
        ``(source path, film folder relative to out_dir)`` of every measured film.
    pairs
        ``(baseline folder, follow-up folder, pair folder)`` relative to ``out_dir`` for
        every compared pair (its ``comparison.json`` holds the lesion matches).
    stem
        File name stem of the objects.

    Returns
    -------
    (written, messages)
        Paths written, and one line per film skipped or failed (say why; not fatal).
    """
    out = Path(out_dir)
    written: list[Path] = []
    messages: list[str] = []
    measured: dict[str, Measurement] = {}  # every film, for tracking and time points
    to_write: list[str] = []  # the films that get objects
    for source, folder in films:
        try:
            m = measurement_from_outputs(source, out / folder)
        except OutputError as exc:
            messages.append(f"DICOM SEG/SR not written: {exc}")
            continue
        measured[folder] = m
        reason = dicom_skip_reason(m)
        if reason is not None:
            messages.append(f"DICOM SEG/SR skipped: {reason}")
        else:
            to_write.append(folder)
    triples = []
    for base_folder, follow_folder, pair_folder in pairs:
        if base_folder not in measured or follow_folder not in measured:
            continue
        try:
            data = json.loads((out / pair_folder / "comparison.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            messages.append(
                f"{pair_folder}: no comparison.json (the comparison failed), so the follow-up's "
                "lesions get new tracking ids in its DICOM SR"
            )
            data = {"lesions": []}
        except (OSError, ValueError) as exc:
            messages.append(f"{pair_folder}/comparison.json unreadable ({exc}); the follow-up's lesions get new tracking ids")
            data = {"lesions": []}
        if data.get("bone_shared"):
            # The comparison segmented a film again (the other's bone added): its rows name
            # that segmentation's lesions, not the ones in the film's folder.
            messages.append(
                f"{pair_folder}: the comparison segmented the {' and '.join(data['bone_shared'])} "
                "again with the other film's bone, so its lesion ids are not the film folder's; "
                "the follow-up's lesions get new tracking ids"
            )
            data = {"lesions": []}
        triples.append((measured[base_folder], measured[follow_folder], data.get("lesions") or []))
    if not triples:  # no pairs: still group the films so each is its own baseline
        tracking = TrackingMap()
    else:
        tracking = build_tracking(triples)
    for folder in to_write:
        paths, notes = _write_noting(measured[folder], out / folder, tracking, stem, folder)
        written.extend(paths)
        messages.extend(notes)
    return written, messages


def _write_noting(
    m: Measurement, out: Path, tracking: TrackingMap, stem: str, label: str
) -> tuple[list[Path], list[str]]:
    """:func:`_write` for batch use: warnings and failures of one film become messages, so
    one film cannot stop the others."""
    notes: list[str] = []
    paths: list[Path] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            paths = _write(m, out, tracking=tracking, timepoint=None, stem=stem)
        except CalcimageError as exc:
            notes.append(f"DICOM SEG/SR not written for {label}: {exc}")
        except Exception as exc:  # highdicom/pydicom on an odd source: report, go on
            logger.debug("DICOM SEG/SR for %s failed", label, exc_info=True)
            notes.append(f"DICOM SEG/SR not written for {label}: internal error: {type(exc).__name__}: {exc}")
    for w in caught:
        if issubclass(w.category, CalcimageWarning):
            notes.append(str(w.message))
        else:
            warnings.warn(w.message, w.category, stacklevel=2)
    return paths, notes


def write_dicom_for_pair(
    baseline: Measurement,
    followup: Measurement,
    rows: Sequence[Any],
    out_dir: str | os.PathLike[str],
) -> tuple[list[Path], list[str]]:
    """DICOM SEG + SR of both films of ``calcimage compare`` into ``out_dir``.

    Files ``baseline.seg.dcm``, ``baseline.sr.dcm``, ``followup.seg.dcm``,
    ``followup.sr.dcm``; matched lesions share their tracking identity, the follow-up's
    time point is T1 with the months between the study dates.

    Parameters
    ----------
    baseline, followup
        The two measured films.
    rows
        The comparison's lesion rows (``Comparison.lesions`` or comparison.json ``lesions``).
    out_dir
        Folder to write into.

    Returns
    -------
    (written, messages)
        Paths written, and one line per film skipped or failed.
    """
    out = Path(out_dir)
    tracking = build_tracking(
        [(baseline, followup, rows)],
        time_points={
            film_key(baseline.film): TimePoint(0, 0.0 if baseline.film.metadata.study_date else None, baseline.film.metadata.study_date),
            film_key(followup.film): _followup_time_point(baseline.film, followup.film),
        },
    )
    written: list[Path] = []
    messages: list[str] = []
    for m, stem in ((baseline, "baseline"), (followup, "followup")):
        reason = dicom_skip_reason(m)
        if reason is not None:
            messages.append(f"DICOM SEG/SR skipped: {reason}")
            continue
        paths, notes = _write_noting(m, out, tracking, stem, f"the {stem}")
        written.extend(paths)
        messages.extend(notes)
    return written, messages


def _followup_time_point(base: Film, follow: Film) -> TimePoint:
    b, f = base.metadata.study_date, follow.metadata.study_date
    months = round((f - b).days / _DAYS_PER_MONTH, 2) if b is not None and f is not None else None
    return TimePoint(index=1, months_since_baseline=months, study_date=f)
