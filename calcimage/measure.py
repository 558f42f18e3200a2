"""Measurement of lesions and regions: ``measure(film, seg, regions) -> Measurement``.

Per lesion (one ``regionprops`` pass over the labels):

- areas: ``area_px`` and ``area_mm2 = area_px × row_spacing × col_spacing``;
- ``equivalent_diameter_mm`` = diameter of the disc of the same mm² area;
- ``major_axis_mm`` / ``minor_axis_mm`` / ``eccentricity``: from the covariance of the pixel
  positions expressed in mm (so anisotropic spacing is exact), skimage's 4·sqrt(eigenvalue)
  convention;
- ``perimeter_mm``: length of the 0.5 iso-contour of the lesion mask (marching squares) with
  each contour step scaled by the row and column spacing — correct for anisotropic spacing;
- ``solidity``: area / convex-hull area (an area ratio, unchanged by the spacing);
- ``mean_intensity`` / ``max_intensity``: film values (brighter = denser);
- ``density_grade`` 1–4 from the peak contrast over local soft tissue, relative to that
  tissue's own level above air (see :class:`MeasureParams` and docs/method.md);
- ``burden`` = area × grade, in mm² (or in px when the film has no spacing).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from skimage import measure as skmeasure
from skimage.segmentation import relabel_sequential

from calcimage.film import Film
from calcimage.params import params_to_dict, require, require_range
from calcimage.regions import OTHER, Regions, assign_lesions, load_regions
from calcimage.segment import LesionKind, Segmentation, axes_mm

__all__ = ["Lesion", "RegionTotal", "MeasureParams", "Measurement", "measure", "remeasure",
           "lean_measurement", "LESION_COLUMNS", "COMPARE_MASKS"]

logger = logging.getLogger(__name__)

#: Column order of lesions.csv (the design's output contract).
LESION_COLUMNS: tuple[str, ...] = (
    "lesion_id", "region", "kind", "area_mm2", "area_px", "centroid_row", "centroid_col",
    "equivalent_diameter_mm", "major_axis_mm", "minor_axis_mm", "perimeter_mm",
    "eccentricity", "solidity", "mean_intensity", "max_intensity", "density_grade", "burden",
)

NO_SPACING_NOTE = (
    "film has no pixel spacing: areas are in pixels, mm fields are empty and burden is "
    "area_px x density_grade; give a spacing (e.g. --spacing 0.1) for mm values"
)


@dataclass(frozen=True)
class MeasureParams:
    """Knobs of :func:`measure` (density grading).

    Attributes
    ----------
    grade_thresholds
        Relative peak contrast at which grades 2, 3 and 4 start. Relative contrast =
        (lesion peak − local background) / (local background − air level), i.e. the lesion's
        extra attenuation as a fraction of the tissue it lies on.
    peak_percentile
        Percentile of the lesion's flattened values used as its peak (robust to one noisy
        pixel).
    """

    grade_thresholds: tuple[float, float, float] = (0.05, 0.10, 0.20)
    peak_percentile: float = 95.0

    def __post_init__(self) -> None:
        g = self.grade_thresholds
        require(len(g) == 3 and all(isinstance(v, (int, float)) and v > 0 for v in g)
                and g[0] < g[1] < g[2], "grade_thresholds", g,
                "three increasing positive numbers, e.g. [0.05, 0.10, 0.20]")
        require_range("peak_percentile", self.peak_percentile, 50.0, 100.0)


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
    #: Peak contrast over local tissue / tissue level above air (what the grade is cut from).
    relative_contrast: float = 0.0

    def row(self) -> dict[str, Any]:
        """The lesions.csv row (LESION_COLUMNS order; None for absent mm values)."""
        out = {c: getattr(self, c) for c in LESION_COLUMNS}
        out["kind"] = self.kind.value
        return out


@dataclass(frozen=True)
class RegionTotal:
    """Per-region totals."""

    name: str
    lesion_count: int
    area_mm2: float | None
    area_px: int
    burden: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (summary.json ``regions`` entry)."""
        return {"name": self.name, "lesion_count": self.lesion_count, "area_mm2": self.area_mm2,
                "area_px": self.area_px, "burden": self.burden}


@dataclass(frozen=True, eq=False)
class Measurement:
    """Result of :func:`measure`: per-lesion table, per-region totals, film totals.

    ``labels`` holds lesion k of ``lesions`` as label k; ``film`` and ``segmentation`` are
    kept so that :func:`calcimage.compare` can register and match.

    ``units`` is ``"mm"`` or ``"px"`` (no spacing); ``note`` says so in words for the summary.
    ``params`` records ``{"segment": ..., "measure": ..., "regions": ...}``.
    """

    film: Film
    segmentation: Segmentation
    labels: np.ndarray
    lesions: tuple[Lesion, ...]
    regions: tuple[RegionTotal, ...]
    params: dict[str, Any] = field(default_factory=dict)
    units: str = "mm"
    note: str = ""
    #: The regions argument and parameters measured with (:func:`remeasure` uses them again;
    #: the spec, not the loaded regions, whose full-size masks would double a lean measurement).
    regions_spec: Regions | str | Path | None = field(default=None, repr=False)
    measure_params: MeasureParams | None = field(default=None, repr=False)

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

    def lesion_rows(self) -> list[dict[str, Any]]:
        """lesions.csv rows in LESION_COLUMNS order."""
        return [l.row() for l in self.lesions]

    def summary(self) -> dict[str, Any]:
        """The measurement part of summary.json (counts, totals, regions, units, params)."""
        return {
            "lesion_count": self.lesion_count,
            "total_area_mm2": self.total_area_mm2,
            "total_area_px": self.total_area_px,
            "total_burden": self.total_burden,
            "units": self.units,
            "note": self.note,
            "regions": [r.as_dict() for r in self.regions],
            "params": self.params,
        }


def _perimeter_mm(mask: np.ndarray, spacing: tuple[float, float]) -> float:
    """Length of the 0.5 iso-contour of ``mask`` (a cropped lesion) in mm."""
    padded = np.pad(mask.astype(np.float32), 1)
    total = 0.0
    for contour in skmeasure.find_contours(padded, 0.5):
        d = np.diff(contour, axis=0) * np.asarray(spacing)
        total += float(np.sqrt((d ** 2).sum(axis=1)).sum())
    return total


def density_grade(relative_contrast: float, params: MeasureParams) -> int:
    """Grade 1–4: 1 + number of ``grade_thresholds`` reached."""
    return 1 + int(sum(relative_contrast >= t for t in params.grade_thresholds))


def measure(film: Film, seg: Segmentation, regions: "Regions | str | Path | None" = None,
            params: MeasureParams = MeasureParams()) -> Measurement:
    """Measure every lesion of ``seg`` on ``film``.

    Parameters
    ----------
    film
        The film that was segmented.
    seg
        Its segmentation.
    regions
        A :class:`~calcimage.regions.Regions`, a spec accepted by
        :func:`~calcimage.regions.load_regions` (``"grid 2x2"``, a JSON or mask file), or
        None for one region named ``film``. Lesion pixels in excluded areas are removed first;
        lesions left smaller than ``seg.params.min_area_mm2`` are dropped.
    params
        Density-grade settings.

    Returns
    -------
    Measurement
        Lesions numbered 1..n in raster order (label k = lesion k), region totals in the
        regions' order (plus ``other`` when the regions leave part of the film uncovered),
        units and the parameters used.
    """
    if seg.labels.shape != film.shape:
        raise ValueError(f"segmentation is {seg.labels.shape} but the film is {film.shape}")
    reg = load_regions(regions, film)
    labels = seg.labels
    kinds = list(seg.kinds)
    sp = film.spacing_mm
    scale_sp = sp if sp is not None else (seg.scale_spacing_mm or 1.0,) * 2
    if reg.excluded.any() and labels.max() > 0:
        labels = np.where(reg.excluded, 0, labels)
        areas = np.bincount(labels.ravel(), minlength=len(kinds) + 1)
        keep = areas * scale_sp[0] * scale_sp[1] >= seg.params.min_area_mm2
        keep[0] = True
        labels = np.where(keep[labels], labels, 0)
        kept_ids = [k for k in range(1, len(kinds) + 1) if keep[k] and areas[k] > 0]
        kinds = [kinds[k - 1] for k in kept_ids]
        labels, _, _ = relabel_sequential(labels)
    labels = labels.astype(np.int32, copy=False)

    region_of = assign_lesions(labels, reg)
    pixel_area = sp[0] * sp[1] if sp is not None else None
    flat = seg.flattened
    bg = seg.background
    lesions: list[Lesion] = []
    for rp in skmeasure.regionprops(labels, intensity_image=film.pixels):
        k = rp.label
        coords = rp.coords
        area_px = int(rp.area)
        major, minor, _ = axes_mm(coords, scale_sp)
        ecc = math.sqrt(max(0.0, 1.0 - (minor / major) ** 2)) if major > 0 else 0.0
        vals = flat[coords[:, 0], coords[:, 1]]
        peak = float(np.percentile(vals, params.peak_percentile))
        i_peak = int(np.argmin(np.abs(vals - peak)))
        if bg is not None:
            tissue = float(bg[coords[i_peak, 0], coords[i_peak, 1]]) - seg.air_level
        else:
            tissue = float(film.pixels[coords[i_peak, 0], coords[i_peak, 1]]) - peak - seg.air_level
        rel = peak / tissue if tissue > 0 else float("inf")
        grade = density_grade(rel, params)
        if sp is not None:
            area_mm2 = area_px * pixel_area
            eqd = math.sqrt(4 * area_mm2 / math.pi)
            r0, c0, r1, c1 = rp.bbox
            perim = _perimeter_mm(rp.image, sp)
            mm = (area_mm2, eqd, major, minor, perim)
            burden = area_mm2 * grade
        else:
            mm = (None,) * 5
            burden = float(area_px * grade)
        lesions.append(Lesion(
            lesion_id=k, region=region_of[k - 1], kind=kinds[k - 1],
            area_mm2=mm[0], area_px=area_px,
            centroid_row=float(rp.centroid[0]), centroid_col=float(rp.centroid[1]),
            equivalent_diameter_mm=mm[1], major_axis_mm=mm[2], minor_axis_mm=mm[3],
            perimeter_mm=mm[4], eccentricity=float(ecc), solidity=float(rp.solidity),
            mean_intensity=float(rp.intensity_mean), max_intensity=float(rp.intensity_max),
            density_grade=grade, burden=float(burden), relative_contrast=float(rel),
        ))

    names = list(reg.names)
    if not reg.covers_film or any(l.region == OTHER for l in lesions):
        names.append(OTHER)
    totals = []
    for name in names:
        ls = [l for l in lesions if l.region == name]
        totals.append(RegionTotal(
            name=name, lesion_count=len(ls),
            area_mm2=float(sum(l.area_mm2 or 0.0 for l in ls)) if sp is not None else None,
            area_px=int(sum(l.area_px for l in ls)),
            burden=float(sum(l.burden for l in ls)),
        ))
    used = {
        "segment": params_to_dict(seg.params),
        "measure": params_to_dict(params),
        "regions": reg.describe(),
        "threshold": seg.threshold,
        "threshold_low": seg.threshold_low,
        "noise_sigma": seg.noise_sigma,
        "scale_spacing_mm": seg.scale_spacing_mm,
    }
    return Measurement(
        film=film, segmentation=seg, labels=labels, lesions=tuple(lesions),
        regions=tuple(totals), params=used, units="mm" if sp is not None else "px",
        note="" if sp is not None else NO_SPACING_NOTE, regions_spec=regions, measure_params=params,
    )


#: Excluded-area masks a comparison uses (registration mask, the outside-the-field test, the
#: bone both films of a pair share); :func:`lean_measurement` keeps these.
COMPARE_MASKS: tuple[str, ...] = ("collimation", "marker", "bone")


def lean_measurement(m: Measurement) -> Measurement:
    """``m`` without its segmentation's full-size working arrays (flattened film, background,
    threshold map, outside-body mask), which comparing and writing do not use, and with its
    labels as uint16 when the lesion ids fit.

    Keeps about a third of a measurement's memory, so two films can be held for a comparison
    (``calcimage compare`` measures the follow-up while holding the baseline).
    """
    seg = m.segmentation
    if seg is None:
        return m
    labels = m.labels
    if labels.dtype.itemsize > 2 and len(m.lesions) <= np.iinfo(np.uint16).max:
        labels = labels.astype(np.uint16)  # half the size; lesion ids fit (as in labels.png)
    lean = replace(
        seg,
        labels=labels if seg.labels is m.labels else seg.labels,
        flattened=np.broadcast_to(np.float32(np.nan), np.shape(seg.flattened)),  # not kept
        background=None,
        threshold_map=None,
        excluded={k: v for k, v in seg.excluded.items() if k in COMPARE_MASKS},
    )
    return replace(m, segmentation=lean, labels=labels)


def remeasure(m: Measurement, seg: Segmentation) -> Measurement:
    """Measure ``m``'s film again with another segmentation of it, with the regions and
    parameters ``m`` was measured with."""
    return measure(m.film, seg, m.regions_spec, m.measure_params or MeasureParams())
