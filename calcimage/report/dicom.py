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
from types import MappingProxyType
from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from skimage.measure import find_contours

from calcimage.errors import CalcimageWarning, OutputError
from calcimage.film import Film
from calcimage.measure import Lesion, Measurement
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
        for name in ("lesions", "groups", "time_points"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

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


def build_tracking(comparisons: Sequence[Comparison]) -> TrackingMap:
    """Longitudinal identities from comparisons, chained back to each group's baseline.

    Films linked by comparisons form a group; within a group films are ordered by study
    date (:func:`time_points`). Every baseline lesion k gets ``"lesion k"`` and a UID derived
    from the baseline's SOP Instance UID and k. A follow-up lesion matched to an earlier
    lesion inherits that lesion's identity (merges: the pair with the largest summed area
    wins, the others get new identities; splits likewise, so an identity appears at most once
    per film); an unmatched lesion first seen at time point i gets ``"lesion Ti-k"``.
    Comparisons may be baseline→each follow-up (as ``calcimage study`` does) or a chain
    (T0→T1→T2); a follow-up compared with several earlier films uses the earliest of them.

    Parameters
    ----------
    comparisons
        Results of :func:`calcimage.compare`; ``lesions`` rows with both ids are matches.

    Returns
    -------
    TrackingMap
        Identities for every lesion of every film in ``comparisons``, each film's group
        baseline, and each film's time point.
    """
    films: dict[str, Measurement] = {}
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for comp in comparisons:
        for m in (comp.baseline, comp.followup):
            key = film_key(m.film)
            films.setdefault(key, m)
            parent.setdefault(key, key)
        a, b = find(film_key(comp.baseline.film)), find(film_key(comp.followup.film))
        if a != b:
            parent[max(a, b)] = min(a, b)

    components: dict[str, list[Measurement]] = {}
    for key, m in films.items():
        components.setdefault(find(key), []).append(m)
    tps: dict[str, TimePoint] = {}
    for members in components.values():
        tps.update(time_points(members))

    incoming: dict[str, list[Comparison]] = {}
    for comp in comparisons:
        incoming.setdefault(film_key(comp.followup.film), []).append(comp)

    lesions: dict[tuple[str, int], TrackingIdentity] = {}
    groups: dict[str, str] = {}
    for key in sorted(films, key=lambda k: (tps[k].index, k)):
        m = films[key]
        tp = tps[key]
        earlier = [c for c in incoming.get(key, []) if tps[film_key(c.baseline.film)].index < tp.index]
        assigned: dict[int, TrackingIdentity] = {}
        if earlier:
            comp = min(earlier, key=lambda c: (tps[film_key(c.baseline.film)].index, film_key(c.baseline.film)))
            base_key = film_key(comp.baseline.film)
            groups[key] = groups.get(base_key, base_key)
            assigned = _inherit(comp, base_key, key, m, lesions)
        else:
            groups[key] = key
        for lesion in m.lesions:
            identity = assigned.get(lesion.lesion_id) or _new_identity(key, lesion.lesion_id, tp.index)
            lesions[(key, lesion.lesion_id)] = identity
    return TrackingMap(lesions=lesions, groups=groups, time_points=tps)


def _inherit(
    comp: Comparison,
    base_key: str,
    key: str,
    m: Measurement,
    known: Mapping[tuple[str, int], TrackingIdentity],
) -> dict[int, TrackingIdentity]:
    """Follow-up lesion id -> inherited identity, at most one follow-up lesion per identity."""
    base_ids = {l.lesion_id for l in comp.baseline.lesions}
    follow_ids = {l.lesion_id for l in m.lesions}
    pairs = []
    for row in comp.lesions:
        if row.baseline_id is None or row.followup_id is None:
            continue
        if row.baseline_id not in base_ids or row.followup_id not in follow_ids:
            logger.warning(
                "comparison row %s -> %s names a lesion the films do not have; ignored",
                row.baseline_id, row.followup_id,
            )
            continue
        weight = (row.area_baseline_mm2 or 0.0) + (row.area_followup_mm2 or 0.0)
        pairs.append((-weight, row.baseline_id, row.followup_id))
    assigned: dict[int, TrackingIdentity] = {}
    used: set[str] = set()
    for _, base_id, follow_id in sorted(pairs):
        identity = known.get((base_key, base_id)) or _new_identity(base_key, base_id, 0)
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
            "written (give --spacing-mm to measure in mm)"
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
    return ds


# --------------------------------------------------------------------------------------------
# Outline


def lesion_outline(mask: np.ndarray) -> np.ndarray:
    """Closed outline of a lesion mask as DICOM SCOORD points ``(x=col, y=row)``.

    The polygon runs through the midpoints between boundary pixels and the background
    (marching squares at level 0.5, diagonal neighbours connected), so the centres of all
    pixels of a hole-free lesion lie inside it and no background pixel centre does. DICOM
    pixel coordinates put (0, 0) at the top-left corner of the top-left pixel, so a pixel
    centre (row, col) is (x=col + 0.5, y=row + 0.5). Holes are not outlined; of several
    parts, the largest is.

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
    row = best[:, 0] + (r0 - 1)
    col = best[:, 1] + (c0 - 1)
    points = np.stack([col + 0.5, row + 0.5], axis=1).astype(np.float32)
    if not np.array_equal(points[0], points[-1]):
        points = np.vstack([points, points[:1]])
    return points


# --------------------------------------------------------------------------------------------
# Writing


def _atomic_write(ds: Dataset, path: Path, inputs: Sequence[Path]) -> None:
    resolved = path.resolve()
    if any(resolved == Path(p).resolve() for p in inputs):
        raise OutputError(f"{path}: refusing to overwrite an input file; choose another output folder")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write DICOM output: {exc.strerror or exc}") from None


def _params_text(measurement: Measurement) -> dict[str, str]:
    seg_params = dataclasses.asdict(measurement.segmentation.params)
    return {
        "segment": json.dumps(seg_params, sort_keys=True, default=str),
        "measure": json.dumps(measurement.params, sort_keys=True, default=str),
    }


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
        desc.SegmentedPropertyTypeModifierCodeSequence = [hd.sr.CodedConcept.from_code(CODES.calcified)]
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
        hd.sr.Measurement(name=CODES.area, value=lesion.area_mm2, unit=CODES.mm2),
        hd.sr.Measurement(name=CODES.density_grade, value=lesion.density_grade, unit=CODES.grade_unit),
        hd.sr.Measurement(name=CODES.burden, value=lesion.burden, unit=CODES.mm2),
    ]


def _total_measurements(lesions: Sequence[Lesion]) -> list[hd.sr.Measurement]:
    return [
        hd.sr.Measurement(
            name=CODES.area,
            value=float(sum(l.area_mm2 or 0.0 for l in lesions)),
            unit=CODES.mm2,
            derivation=CODES.total,
        ),
        hd.sr.Measurement(name=CODES.count, value=len(lesions), unit=CODES.count_unit),
        hd.sr.Measurement(
            name=CODES.burden,
            value=float(sum(l.burden for l in lesions)),
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
    algorithm = hd.sr.AlgorithmIdentification(
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
            algorithm_id=algorithm,
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
) -> list[Path]:
    """Write a DICOM SEG and a Comprehensive SR (TID 1500) for one measured DICOM film.

    Files: ``out_dir/S.seg.dcm`` and ``out_dir/S.sr.dcm`` with S the film's file stem. A
    film without lesions gets only the SR (a SEG needs at least one segment). Films that
    cannot have DICOM results (see :func:`dicom_skip_reason`) are skipped with a
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
    _check(measurement)
    from calcimage import __version__

    film = measurement.film
    tracking = tracking if tracking is not None else TrackingMap()
    tp = timepoint or tracking.time_point(film) or TimePoint(study_date=film.metadata.study_date)
    source = _read_source(film)
    built = _build_seg(measurement, source, tracking, __version__)
    seg, segment_numbers = built if built is not None else (None, {})
    sr = _build_sr(measurement, source, seg, segment_numbers, tracking, tp, __version__)

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create the DICOM output folder: {exc.strerror or exc}") from None
    inputs = [film.path] if film.path is not None else []
    written: list[Path] = []
    if seg is not None:
        seg_path = out / f"{film.name}{SEG_SUFFIX}"
        _atomic_write(seg, seg_path, inputs)
        written.append(seg_path)
    else:
        logger.info("%s: no lesions, so no DICOM SEG (a SEG needs a segment); SR written", film.name)
    sr_path = out / f"{film.name}{SR_SUFFIX}"
    _atomic_write(sr, sr_path, inputs)
    written.append(sr_path)
    return written
