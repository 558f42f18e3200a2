"""Lesion matching between a baseline and a registered follow-up.

1. The follow-up label image is warped into baseline pixels (nearest neighbour) with the
   registration, and an overlap table counts pixels shared by each baseline/follow-up pair.
2. An optimal one-to-one assignment (``scipy.optimize.linear_sum_assignment``) pairs lesions:
   overlapping pairs cost ``1 − Dice``; pairs that do not overlap but whose centroids lie
   within ``match_distance_mm`` cost ``1 + distance / match_distance_mm`` (always worse than
   any overlap); other pairs cannot match.
3. Lesions left out of the assignment join the group of a lesion they overlap by at least
   ``group_overlap`` of the smaller of the two: several baseline lesions in one follow-up
   lesion form a **merge**, one baseline lesion in several follow-up lesions a **split**.
   Connected groups are found with a union–find over all these links.
4. Each group gets a status from its total areas (follow-up at the baseline's magnification):
   ``new``, ``resolved``, or ``stable`` within ±``stable_pct`` % or ±``stable_mm2`` mm²,
   otherwise ``grown`` / ``shrunk``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

from calcimage.compare import CompareParams, LesionChange, Registration, Relation, Status
from calcimage.measure import Measurement
from calcimage.segment import robust_sigma as _robust_sigma

__all__ = ["MatchGroup", "Footprint", "PlaceMeasurement", "footprint", "warp_labels", "warp_mask", "overlap_table", "group_lesions", "lesion_status",
           "measure_at", "match_lesions"]

logger = logging.getLogger(__name__)

#: Cost of a pair that must not match.
_FORBIDDEN = 1.0e6

_SWAP = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
_IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@dataclass(frozen=True)
class MatchGroup:
    """Lesions that correspond between the films (ids are label values, 1-based)."""

    baseline_ids: tuple[int, ...]
    followup_ids: tuple[int, ...]
    relation: Relation


def warp_labels(labels: np.ndarray, registration: Registration, base_shape: tuple[int, int]) -> np.ndarray:
    """Resample a follow-up label image onto the baseline's pixel grid (nearest neighbour).

    Parameters
    ----------
    labels
        int label image of the follow-up (0 = background).
    registration
        Its ``matrix`` maps follow-up (row, col, 1) to baseline (row, col).
    base_shape
        (rows, cols) of the baseline.

    Returns
    -------
    numpy.ndarray
        int32 (rows, cols) of the baseline; 0 outside the follow-up film.
    """
    labels = np.asarray(labels)
    if labels.size and int(labels.max()) >= 2**24:
        raise ValueError(f"too many labels to warp exactly ({int(labels.max())})")
    return _warp_nearest(labels.astype(np.float32), registration.matrix, base_shape).astype(np.int32)


def warp_mask(mask: np.ndarray, registration: Registration, shape: tuple[int, int]) -> np.ndarray:
    """A bool mask of one film resampled (nearest neighbour) onto the grid ``shape`` of the film
    ``registration.matrix`` maps its ``(row, col, 1)`` to; False outside it."""
    return _warp_nearest(np.asarray(mask, dtype=np.uint8), registration.matrix, shape).view(bool)


def _warp_nearest(image: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` resampled (nearest neighbour, 0 outside) onto the grid ``shape`` that the 2×3
    ``matrix`` maps its ``(row, col, 1)`` to."""
    m_rc = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    # warpAffine with WARP_INVERSE_MAP wants destination -> source, in (x, y).
    inv_xy = _SWAP @ np.linalg.inv(m_rc) @ _SWAP
    return cv2.warpAffine(image, inv_xy[:2], (shape[1], shape[0]),
                          flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def overlap_table(base_labels: np.ndarray, follow_labels: np.ndarray, n_base: int, n_follow: int) -> np.ndarray:
    """Pixel counts shared by every (baseline k, follow-up l) pair; row/column 0 is background.

    Both label images must be on the same grid. Returns int64 ``(n_base + 1, n_follow + 1)``.
    """
    b = np.asarray(base_labels).ravel()
    f = np.asarray(follow_labels).ravel()
    if b.shape != f.shape:
        raise ValueError(f"label images differ in size: {np.shape(base_labels)} vs {np.shape(follow_labels)}")
    # Only pixels inside some lesion matter; background-background is the bulk of the film.
    sel = np.flatnonzero((b > 0) | (f > 0))
    codes = b[sel].astype(np.int64) * (n_follow + 1) + f[sel].astype(np.int64)
    counts = np.bincount(codes, minlength=(n_base + 1) * (n_follow + 1))
    return counts[: (n_base + 1) * (n_follow + 1)].reshape(n_base + 1, n_follow + 1)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def group_lesions(overlap: np.ndarray, distance_mm: np.ndarray, params: CompareParams = CompareParams()
                  ) -> tuple[list[MatchGroup], list[tuple[int, int]]]:
    """Pair and group lesions from their overlap and centroid distances.

    Parameters
    ----------
    overlap
        ``(n_base + 1, n_follow + 1)`` pixel counts from :func:`overlap_table`, both on the
        baseline grid (the follow-up warped).
    distance_mm
        ``(n_base, n_follow)`` centroid distances in baseline mm.
    params
        ``match_distance_mm`` and ``group_overlap`` are used.

    Returns
    -------
    groups
        One :class:`MatchGroup` per connected set, baseline-ordered, new lesions last.
    pairs
        The one-to-one assignment (baseline id, follow-up id).
    """
    n_base = overlap.shape[0] - 1
    n_follow = overlap.shape[1] - 1
    area_b = overlap[1:, :].sum(axis=1).astype(np.float64)  # baseline lesion areas (px)
    area_f = overlap[:, 1:].sum(axis=0).astype(np.float64)  # warped follow-up areas (px)
    ov = overlap[1:, 1:].astype(np.float64)
    pairs: list[tuple[int, int]] = []
    if n_base and n_follow:
        dice = 2.0 * ov / np.maximum(area_b[:, None] + area_f[None, :], 1.0)
        cost = np.full((n_base, n_follow), _FORBIDDEN)
        near = distance_mm <= params.match_distance_mm
        scale = max(params.match_distance_mm, 1e-9)
        cost[near] = 1.0 + distance_mm[near] / scale
        cost[ov > 0] = 1.0 - dice[ov > 0]
        rows, cols = linear_sum_assignment(cost)
        pairs = [(int(r) + 1, int(c) + 1) for r, c in zip(rows, cols) if cost[r, c] < _FORBIDDEN]

    uf = _UnionFind(n_base + n_follow)
    for i, j in pairs:
        uf.union(i - 1, n_base + j - 1)
    if n_base and n_follow:
        smaller = np.minimum(area_b[:, None], area_f[None, :])
        strong = (ov > 0) & (ov >= params.group_overlap * np.maximum(smaller, 1.0))
        for r, c in zip(*np.nonzero(strong)):
            uf.union(int(r), n_base + int(c))

    members: dict[int, tuple[list[int], list[int]]] = {}
    for i in range(n_base):
        members.setdefault(uf.find(i), ([], []))[0].append(i + 1)
    for j in range(n_follow):
        members.setdefault(uf.find(n_base + j), ([], []))[1].append(j + 1)
    groups = []
    for b_ids, f_ids in members.values():
        if not f_ids:
            relation = Relation.RESOLVED
        elif not b_ids:
            relation = Relation.NEW
        elif len(b_ids) == 1 and len(f_ids) == 1:
            relation = Relation.ONE_TO_ONE
        elif len(f_ids) == 1:
            relation = Relation.MERGE
        elif len(b_ids) == 1:
            relation = Relation.SPLIT
        else:
            relation = Relation.COMPLEX
        groups.append(MatchGroup(tuple(sorted(b_ids)), tuple(sorted(f_ids)), relation))
    groups.sort(key=lambda g: (not g.baseline_ids, g.baseline_ids[:1] or g.followup_ids[:1]))
    return groups, pairs


def lesion_status(area_baseline_mm2: float, area_followup_mm2: float, params: CompareParams = CompareParams()) -> Status:
    """Status of a lesion (or group) from its areas, follow-up at baseline magnification."""
    if area_baseline_mm2 <= 0.0 and area_followup_mm2 <= 0.0:
        return Status.STABLE
    if area_followup_mm2 <= 0.0:
        return Status.RESOLVED
    if area_baseline_mm2 <= 0.0:
        return Status.NEW
    delta = area_followup_mm2 - area_baseline_mm2
    if abs(delta) <= params.stable_mm2 or abs(delta) <= params.stable_pct / 100.0 * area_baseline_mm2:
        return Status.STABLE
    return Status.GROWN if delta > 0 else Status.SHRUNK


def _centroids_mm(m: Measurement) -> np.ndarray:
    """(n, 2) lesion centroids of ``m`` in its own mm (row, col)."""
    sr, sc = m.film.spacing_mm or (1.0, 1.0)
    return np.array([[(l.centroid_row + 0.5) * sr, (l.centroid_col + 0.5) * sc] for l in m.lesions],
                    dtype=np.float64).reshape(-1, 2)


def _follow_centroids_in_base_mm(base: Measurement, follow: Measurement, reg: Registration) -> np.ndarray:
    sr, sc = base.film.spacing_mm or (1.0, 1.0)
    rows = np.array([l.centroid_row for l in follow.lesions], dtype=np.float64)
    cols = np.array([l.centroid_col for l in follow.lesions], dtype=np.float64)
    br, bc = reg.map_points(rows, cols)
    return np.stack([(br + 0.5) * sr, (bc + 0.5) * sc], axis=1).reshape(-1, 2)


def _outside_field(source: Measurement, target: Measurement, matrix: np.ndarray) -> np.ndarray:
    """For each lesion of ``source``: does its centroid, mapped by ``matrix`` (source (row, col,
    1) -> target (row, col)), fall outside ``target``'s film or inside its collimation?"""
    n = len(source.lesions)
    if n == 0:
        return np.zeros(0, dtype=bool)
    m = np.asarray(matrix, dtype=np.float64)
    r = np.array([l.centroid_row for l in source.lesions])
    c = np.array([l.centroid_col for l in source.lesions])
    tr = np.rint(m[0, 0] * r + m[0, 1] * c + m[0, 2]).astype(np.int64)
    tc = np.rint(m[1, 0] * r + m[1, 1] * c + m[1, 2]).astype(np.int64)
    rows, cols = target.film.shape
    out = (tr < 0) | (tr >= rows) | (tc < 0) | (tc >= cols)
    excluded = dict(target.segmentation.excluded) if target.segmentation is not None else {}
    coll = excluded.get("collimation")
    if coll is not None and np.shape(coll) == (rows, cols):
        inside = ~out
        out[inside] = np.asarray(coll, dtype=bool)[tr[inside], tc[inside]]
    return out



# --------------------------------------------------------------------------------------------
# paired measurement: a lesion labelled on one film only, looked for at its place on the other


@dataclass(frozen=True)
class PlaceMeasurement:
    """What one film shows at a (mapped) lesion footprint (:func:`measure_at`).

    Attributes
    ----------
    signal_sigma
        Mean contrast over the footprint in units of its own noise (the spread of the same
        mean over the ring around it); 0 when it could not be measured.
    area_px
        Pixels (of the measured film) within the footprint grown by the margin whose contrast
        reaches the segmentation's hysteresis level, in components touching the footprint and
        not labelled as another lesion there.
    footprint_px
        Pixels of the footprint on the measured film (0: it falls outside the film).
    """

    signal_sigma: float
    area_px: int
    footprint_px: int
    #: Mean contrast over the footprint (film units over the local background).
    mean_contrast: float = 0.0
    #: 95th percentile of the contrast over the background ring (anatomy that runs on).
    ring_high: float = 0.0
    #: Robust noise sigma of the contrast over the ring.
    ring_sigma: float = 0.0
    #: The area was measured out to ``paired_grow_mm`` against a background refitted beyond it.
    grew: bool = False


def _local_levels(seg: Any, sigma_px: float) -> float:
    """Hysteresis (low) level of the segmentation of a film, at local noise ``sigma_px``."""
    sp = seg.params
    if seg.threshold_k is not None:
        return float(sp.low_ratio * seg.threshold_k * sigma_px)
    if seg.threshold_low > 0:
        return float(seg.threshold_low)
    return float(sp.low_ratio * sp.k_sigma * sigma_px)  # no threshold recorded (a hand-made labelling)


@dataclass(frozen=True)
class Footprint:
    """Pixels of some lesions of one film and how they map onto another film.

    ``mask`` is a bool crop of the lesions' film whose top-left pixel is ``origin`` (row, col);
    ``matrix`` (2×3) maps that film's (row, col, 1) to the target film's (row, col).
    """

    mask: np.ndarray
    origin: tuple[int, int]
    matrix: np.ndarray


def footprint(m: Measurement, lesion_ids: tuple[int, ...], matrix: np.ndarray,
              boxes: list[Any] | None = None) -> Footprint:
    """The :class:`Footprint` of lesions ``lesion_ids`` of ``m`` (``boxes``: the slices of
    ``scipy.ndimage.find_objects(m.labels)``, computed once per film)."""
    labels = np.asarray(m.labels)
    if boxes is None:
        boxes = ndi.find_objects(labels)
    sl = [boxes[i - 1] for i in lesion_ids if 0 < i <= len(boxes) and boxes[i - 1] is not None]
    if not sl:
        return Footprint(np.zeros((0, 0), bool), (0, 0), np.asarray(matrix, dtype=np.float64))
    r0, r1 = min(s[0].start for s in sl), max(s[0].stop for s in sl)
    c0, c1 = min(s[1].start for s in sl), max(s[1].stop for s in sl)
    crop = labels[r0:r1, c0:c1]
    mask = np.isin(crop, np.asarray(lesion_ids, dtype=crop.dtype))
    return Footprint(mask, (int(r0), int(c0)), np.asarray(matrix, dtype=np.float64))


def _background_removed(pixels: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """``pixels`` minus a robust quadratic surface fitted over the ``ring`` pixels (three
    least-squares passes, each dropping residuals beyond 3 robust sigmas)."""
    gr, gc = np.nonzero(ring)
    vals = pixels[gr, gc].astype(np.float64)
    mr, mc = gr.mean(), gc.mean()
    scale = max(float(np.ptp(gr)), float(np.ptp(gc)), 1.0)

    def terms(r: np.ndarray, c: np.ndarray) -> list[np.ndarray]:
        u, v = (r - mr) / scale, (c - mc) / scale
        return [np.ones_like(u), u, v, u * u, u * v, v * v]

    design = np.stack(terms(gr.astype(np.float64), gc.astype(np.float64)), axis=1)
    keep = np.ones(vals.size, bool)
    coef = np.zeros(design.shape[1])
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(design[keep], vals[keep], rcond=None)
        res = vals - design @ coef
        s = _robust_sigma(res[keep])
        if s <= 0:
            break
        keep = np.abs(res - np.median(res[keep])) <= 3.0 * s
    # the surface on the whole crop, by broadcasting a column and a row (no full-size grids)
    u = ((np.arange(pixels.shape[0], dtype=np.float64) - mr) / scale)[:, None]
    v = ((np.arange(pixels.shape[1], dtype=np.float64) - mc) / scale)[None, :]
    a0, a1, a2, a3, a4, a5 = (float(c) for c in coef)
    surface = ((a0 + a1 * u + a3 * u * u) + (a2 * v + a5 * v * v)).astype(np.float32)
    surface += (a4 * u).astype(np.float32) * v.astype(np.float32)
    return pixels - surface


def _component_area(resid: np.ndarray, allowed: np.ndarray, seeds: np.ndarray, seg: Any,
                    sigma_px: float, edge_fraction: float) -> np.ndarray:
    """Pixels of ``allowed`` at the edge level (segmentation's hysteresis level at local noise
    ``sigma_px``, and ``edge_fraction`` of the peak) in components that touch ``seeds``."""
    low = _local_levels(seg, sigma_px)
    peak = float(resid[allowed].max(initial=0.0))
    level = max(low, edge_fraction * peak)
    above = (resid >= level) & allowed
    _, lab = cv2.connectedComponents(above.astype(np.uint8), connectivity=8)
    touching = np.unique(lab[seeds & above])
    touching = touching[touching > 0]
    return np.isin(lab, touching) if touching.size else np.zeros_like(above)


def measure_at(footprints: Sequence[Footprint], target: Measurement, params: CompareParams = CompareParams(),
               target_ids: tuple[int, ...] = (), force_grow: bool = False) -> PlaceMeasurement:
    """Measure ``target`` at the union of ``footprints`` mapped onto it.

    On a crop of the target, smoothed as segmentation smooths it (``smooth_mm``), the local
    background is a robust quadratic surface fitted over a ring ``paired_margin_mm`` to
    ``paired_margin_mm + paired_ring_mm`` from the footprint, with the target's other lesions
    (all but ``target_ids``, grown by the margin) and excluded areas left out.

    - signal: the mean contrast over the footprint divided by the spread of that mean over
      the ring (box means no wider than the ring, scaled to the footprint's area, so that
      correlated noise and anatomy count);
    - area: what segmentation's edge rule keeps within ``paired_margin_mm`` of the footprint
      (contrast at least the hysteresis level, i.e. local noise × the segmentation's
      ``threshold_k`` × ``low_ratio``, and ``paired_edge_fraction`` of the peak, or the
      segmentation's ``edge_fraction`` when that is 0) in components touching the footprint.
      When that fills at least half of the zone's edge (the lesion
      grew), or when ``force_grow``, the background is fitted again on a ring beyond what was
      found and the area may reach ``paired_grow_mm`` from the footprint (``grew`` is then
      true).
    """
    shape_t = target.film.shape
    sp_t = target.film.spacing_mm or (1.0, 1.0)
    px_mm = float(min(sp_t))
    ring_mm = params.paired_ring_mm
    gap = params.paired_margin_mm
    grow = max(params.paired_grow_mm, gap)
    gap_px, grow_px = gap / px_mm, grow / px_mm
    pad = int(math.ceil((grow + gap + ring_mm) / px_mm)) + 2
    parts = [f for f in footprints if f.mask.size and f.mask.any()]
    if not parts:
        return PlaceMeasurement(0.0, 0, 0)
    mapped = []
    for f in parts:
        (r0, c0), (h, w) = f.origin, f.mask.shape
        corners = np.array([[r0, c0, 1], [r0, c0 + w, 1], [r0 + h, c0, 1], [r0 + h, c0 + w, 1]],
                           dtype=np.float64) - [0.5, 0.5, 0.0]
        mapped.append(corners @ f.matrix[:2].T)
    allc = np.concatenate(mapped)
    t0 = max(int(math.floor(allc[:, 0].min())) - pad, 0)
    t1 = min(int(math.ceil(allc[:, 0].max())) + pad + 1, shape_t[0])
    u0 = max(int(math.floor(allc[:, 1].min())) - pad, 0)
    u1 = min(int(math.ceil(allc[:, 1].max())) + pad + 1, shape_t[1])
    if t1 - t0 < 3 or u1 - u0 < 3:
        return PlaceMeasurement(0.0, 0, 0)
    core = np.zeros((t1 - t0, u1 - u0), bool)
    shift_t = np.array([[1.0, 0.0, t0], [0.0, 1.0, u0], [0.0, 0.0, 1.0]])
    for f in parts:
        m = np.vstack([f.matrix[:2], [0.0, 0.0, 1.0]])
        shift_s = np.array([[1.0, 0.0, -f.origin[0]], [0.0, 1.0, -f.origin[1]], [0.0, 0.0, 1.0]])
        # target-crop (row, col) -> footprint-crop (row, col), as (x, y) for warpAffine
        inv_xy = _SWAP @ (shift_s @ np.linalg.inv(m) @ shift_t) @ _SWAP
        core |= cv2.warpAffine(f.mask.astype(np.float32), inv_xy[:2], (u1 - u0, t1 - t0),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0) >= 0.5
    n_core = int(core.sum())
    if n_core == 0:
        return PlaceMeasurement(0.0, 0, 0)

    pixels = np.asarray(target.film.pixels[t0:t1, u0:u1], dtype=np.float32)
    seg = target.segmentation
    smooth_px = seg.params.smooth_mm / px_mm
    if seg.params.smooth_mm > 0 and smooth_px >= 0.3:
        pixels = cv2.GaussianBlur(pixels, (0, 0), smooth_px)
    tl = np.asarray(target.labels[t0:t1, u0:u1])
    others = tl > 0
    if target_ids:  # the lesion itself, labelled on the target, is not another lesion
        others &= ~np.isin(tl, np.asarray(target_ids, dtype=tl.dtype))
    bad = np.zeros_like(core)
    for name in ("collimation", "marker"):
        mask = dict(seg.excluded).get(name)
        if mask is not None and np.shape(mask) == shape_t:
            bad |= np.asarray(mask[t0:t1, u0:u1], dtype=bool)
    margin_px = params.paired_margin_mm / px_mm
    # distances (px) from the footprint: the zone and the ring are bands of one transform
    dist = cv2.distanceTransform((~core).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5)
    zone = dist <= gap_px
    outer = dist <= gap_px + ring_mm / px_mm
    # Lesions labelled on the target, with their blurred rims, belong to them: kept out of the
    # background, the signal and the area.
    near_others = (cv2.distanceTransform((~others).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5) <= margin_px
                   if others.any() else others)
    ring = outer & ~zone & ~bad & ~near_others
    free = core & ~near_others & ~bad
    n_free = int(free.sum())
    if int(ring.sum()) < max(16, n_core // 2) or n_free < max(1, n_core // 2):
        return PlaceMeasurement(0.0, 0, n_core)

    resid = _background_removed(pixels, ring)
    sigma_px = _robust_sigma(resid[ring])
    mean_core = float(resid[free].mean())

    # spread of a footprint-sized mean over the ring
    # (box of the footprint's area, no wider than the ring; larger footprints scale as white noise)
    k = max(1, min(int(round(math.sqrt(n_free))), int(ring_mm / px_mm)))
    ring_f = ring.astype(np.float32)
    box_mask = cv2.blur(ring_f, (k, k), borderType=cv2.BORDER_CONSTANT)
    box_vals = cv2.blur(resid * ring_f, (k, k), borderType=cv2.BORDER_CONSTANT)
    full = box_mask >= 0.999
    if int(full.sum()) >= 8:
        sigma_mean = _robust_sigma(box_vals[full]) * k / math.sqrt(max(n_free, k * k))
    else:
        corr_px = max(1.0, 4.0 * math.pi * smooth_px ** 2)
        sigma_mean = sigma_px * math.sqrt(min(1.0, corr_px / n_free))
    t = mean_core / sigma_mean if sigma_mean > 0 else 0.0
    if not math.isfinite(t):
        t = 0.0

    # The rule's own edge level (``paired_edge_fraction``) sits above the blurred rim, whose
    # width does not grow with the lesion: its areas' ratio follows the lesion's growth.
    edge_fraction = params.paired_edge_fraction or seg.params.edge_fraction
    comp = _component_area(resid, zone & ~bad & ~near_others, free, seg, sigma_px, edge_fraction)
    edge = zone & (dist > gap_px - 1.0)
    grew = False
    if grow_px > gap_px and (force_grow or np.count_nonzero(comp & edge) >= 0.5 * np.count_nonzero(edge)):
        # The lesion fills the zone's edge (it grew, or the footprint was partial): the background
        # is fitted again beyond what was found, and the area may reach ``paired_grow_mm``.
        found = (comp | core).astype(np.uint8)
        d2 = cv2.distanceTransform(1 - found, cv2.DIST_L2, cv2.DIST_MASK_5)
        ring2 = (d2 > gap_px) & (d2 <= gap_px + ring_mm / px_mm) & ~bad & ~near_others
        if int(ring2.sum()) >= max(16, n_core // 2):
            grew = True
            resid, ring = _background_removed(pixels, ring2), ring2
            sigma_px = _robust_sigma(resid[ring])
            comp = _component_area(resid, (dist <= grow_px) & ~bad & ~near_others, free, seg, sigma_px,
                                   edge_fraction)
            # contrast and ring level against the background beyond the lesion
            mean_core = float(resid[free].mean())
    area_px = int(comp.sum())
    return PlaceMeasurement(float(t), area_px, n_core, mean_core, float(np.percentile(resid[ring], 95)), sigma_px,
                            grew)


def _area_mm2(m: Measurement, area_px: int) -> float:
    sp = m.film.spacing_mm or (1.0, 1.0)
    return float(area_px * sp[0] * sp[1])


def _grown_alike(here: PlaceMeasurement, there: PlaceMeasurement,
                 fp_here: Sequence[Footprint], film_here: Measurement, ids_here: tuple[int, ...],
                 fp_there: Sequence[Footprint], film_there: Measurement, ids_there: tuple[int, ...],
                 params: CompareParams) -> tuple[PlaceMeasurement, PlaceMeasurement]:
    """One rule on both films: when :func:`measure_at` grew beyond the margin on one film only,
    the other is measured again grown too."""
    if here.grew and not there.grew:
        there = measure_at(fp_there, film_there, params, ids_there, force_grow=True)
    elif there.grew and not here.grew:
        here = measure_at(fp_here, film_here, params, ids_here, force_grow=True)
    return here, there


def _paired_area(source: Measurement, lesion_id: int, target: Measurement, matrix: np.ndarray,
                 params: CompareParams, boxes: list[Any]) -> tuple[float, float]:
    """(signal in sigmas, area in mm² on ``target``'s own grid) of lesion ``lesion_id`` of
    ``source`` looked for on ``target``; the area is 0 when no lesion is found there.

    Found means: the mean contrast over the mapped footprint is significant
    (``paired_min_sigma``) and at least ``paired_min_fraction`` of the same measurement on the
    lesion's own film (an offset of the anatomy under a large footprint is significant but
    faint); ``paired_anatomy_fraction`` of it when the place is no brighter than the ring's
    95th percentile (anatomy such as a cortex runs through it and would pass on its own).

    The change is measured by the same rule on both films: the lesion's segmented area times
    the rule's area on ``target`` over the rule's area on the lesion's own film. So a lesion
    that segmentation found only in part keeps that part's share on both films, and what the
    rule adds beyond segmentation (blur, the edge level, the rest of a plaque) cancels. When
    the rule grew beyond the margin on one film only, the other is measured grown too. A
    lesion the rule cannot see on its own film (below ``paired_min_sigma`` there) has no
    such ratio and is not paired."""
    own = footprint(source, (lesion_id,), _IDENTITY, boxes)
    fp_here, fp_there = [own], [replace(own, matrix=np.asarray(matrix, dtype=np.float64))]  # one crop, two mappings
    there = measure_at(fp_there, target, params)
    if there.signal_sigma < params.paired_min_sigma or there.area_px == 0:
        return there.signal_sigma, 0.0
    here = measure_at(fp_here, source, params, (lesion_id,))
    # No brighter than the anatomy running through the ring (a cortex under the footprint):
    # the place must look much as it did on the lesion's own film.
    need = params.paired_min_fraction if there.mean_contrast > there.ring_high else params.paired_anatomy_fraction
    if there.mean_contrast < need * here.mean_contrast or here.signal_sigma < params.paired_min_sigma:
        return there.signal_sigma, 0.0
    here, there = _grown_alike(here, there, fp_here, source, (lesion_id,), fp_there, target, (), params)
    if here.area_px == 0 or there.area_px == 0:
        return there.signal_sigma, 0.0
    there_mm2 = _area_mm2(target, there.area_px)
    if here.area_px < params.paired_min_own_share * here.footprint_px:
        return there.signal_sigma, there_mm2  # the rule hardly sees it on its own film: no ratio
    seg_area = float(source.lesions[lesion_id - 1].area_mm2 or 0.0)
    return there.signal_sigma, seg_area * there_mm2 / _area_mm2(source, here.area_px)


def _mostly_in(mask: Any, m: Measurement, lesion_ids: tuple[int, ...]) -> bool:
    """Whether most pixels of lesions ``lesion_ids`` of ``m`` lie in ``mask`` (False when
    there is no mask of the film's shape, or no such pixel)."""
    labels = np.asarray(m.labels)
    if mask is None or np.shape(mask) != labels.shape:
        return False
    sel = np.isin(labels, np.asarray(lesion_ids, dtype=labels.dtype))
    return bool(np.asarray(mask)[sel].mean() > 0.5) if sel.any() else False


def _over_bone(m: Measurement, lesion_ids: tuple[int, ...]) -> bool:
    """Whether most pixels of lesions ``lesion_ids`` of ``m`` lie in its bone mask (False when
    the measurement has none)."""
    bone = dict(m.segmentation.excluded).get("bone") if m.segmentation is not None else None
    return _mostly_in(bone, m, lesion_ids)


def _by_pixel_model(m: Measurement, lesion_ids: tuple[int, ...]) -> bool:
    """Whether most pixels of lesions ``lesion_ids`` of ``m`` are lesions its segmentation's
    pixel model added or extended (False when it added none)."""
    return _mostly_in(getattr(m.segmentation, "pixel_added", None), m, lesion_ids)


def _segmented(m: Measurement) -> bool:
    """Whether ``m``'s lesions are :func:`calcimage.segment`'s (a hand-made labelling has no
    working scale: its areas are taken as drawn)."""
    return m.segmentation is not None and m.segmentation.scale_spacing_mm > 0


def _one_rule(base: Measurement, follow: Measurement, g: Any, ratio: float, params: CompareParams) -> bool:
    """Whether matched group ``g``, whose segmented areas differ by the factor ``ratio``, is
    measured by one rule on both films: always with ``paired_all_matched`` when both films'
    lesions are segmentation's; otherwise over bone when ``ratio`` exceeds
    ``paired_matched_ratio``; found by the pixel model on one film and by the rules on the
    other; or found by the model on both with ``ratio`` over ``paired_matched_ratio`` (the
    model's regions follow its probability's level, which the films' noise moves)."""
    if params.paired_all_matched and _segmented(base) and _segmented(follow):
        return True
    far = params.paired_matched_ratio > 0 and ratio > params.paired_matched_ratio
    if far and _over_bone(base, g.baseline_ids):
        return True
    if not params.paired_pixel_model:
        return False
    model_b, model_f = _by_pixel_model(base, g.baseline_ids), _by_pixel_model(follow, g.followup_ids)
    return model_b != model_f or (far and model_b)


def _group_ratio(base: Measurement, follow: Measurement, g: Any, to_base: np.ndarray, to_follow: np.ndarray,
                 scale2: float, params: CompareParams, boxes_b: list[Any], boxes_f: list[Any]) -> float | None:
    """Follow-up / baseline area of a matched group measured by one rule on both films
    (:func:`measure_at` over the union of both films' footprints; both grown when one grows),
    at the baseline's magnification; None when the rule finds nothing, or less than
    ``paired_min_own_share`` of the footprints, on either film."""
    fb = footprint(base, g.baseline_ids, _IDENTITY, boxes_b)
    ff = footprint(follow, g.followup_ids, _IDENTITY, boxes_f)
    on_b = [fb, replace(ff, matrix=np.asarray(to_base, dtype=np.float64))]
    on_f = [replace(fb, matrix=np.asarray(to_follow, dtype=np.float64)), ff]
    here, there = _grown_alike(measure_at(on_b, base, params, g.baseline_ids),
                               measure_at(on_f, follow, params, g.followup_ids),
                               on_b, base, g.baseline_ids, on_f, follow, g.followup_ids, params)
    if here.area_px == 0 or there.area_px == 0:
        return None
    if min(here.area_px / here.footprint_px, there.area_px / there.footprint_px) < params.paired_min_own_share:
        return None  # the rule hardly sees the group on one film: its ratio means nothing
    return (_area_mm2(follow, there.area_px) / scale2) / _area_mm2(base, here.area_px)


def match_lesions(base: Measurement, follow: Measurement, reg: Registration,
                  params: CompareParams = CompareParams()) -> tuple[LesionChange, ...]:
    """Match the lesions of two measured films and give each a status.

    Parameters
    ----------
    base, follow
        Measurements; lesion k is label k of ``.labels``.
    reg
        Registration of ``follow`` onto ``base`` (:func:`calcimage.register.register`).
    params
        Matching and status parameters.

    Returns
    -------
    tuple of LesionChange
        One row per lesion of the side with more lesions in each group (see
        :class:`~calcimage.compare.LesionChange` for how merge/split areas are shared), in
        group order; follow-up areas at the baseline's magnification.
    """
    n_base, n_follow = len(base.lesions), len(follow.lesions)
    for role, m in (("baseline", base), ("follow-up", follow)):
        ids = [l.lesion_id for l in m.lesions]
        if ids != list(range(1, len(ids) + 1)):
            raise ValueError(f"{role} lesion ids must be 1..n in order (label k = lesion k), got {ids[:5]}...")
    warped = warp_labels(follow.labels, reg, base.film.shape)
    overlap = overlap_table(base.labels, warped, n_base, n_follow)
    cb = _centroids_mm(base)
    cf = _follow_centroids_in_base_mm(base, follow, reg)
    distance = np.sqrt(((cb[:, None, :] - cf[None, :, :]) ** 2).sum(axis=2)) if n_base and n_follow \
        else np.zeros((n_base, n_follow))
    groups, pairs = group_lesions(overlap, distance, params)
    assigned = dict(pairs)
    assigned_rev = {j: i for i, j in pairs}
    scale2 = float(reg.scale) ** 2
    area_b = {l.lesion_id: float(l.area_mm2 or 0.0) for l in base.lesions}
    area_f_raw = {l.lesion_id: float(l.area_mm2 or 0.0) for l in follow.lesions}
    px_b = overlap[1:, :].sum(axis=1).astype(np.float64)
    px_f = overlap[:, 1:].sum(axis=0).astype(np.float64)

    def dice(i: int, j: int) -> float:
        return float(2.0 * overlap[i, j] / max(px_b[i - 1] + px_f[j - 1], 1.0))

    def dist(i: int, j: int) -> float:
        return float(distance[i - 1, j - 1])

    outside_base = _outside_field(follow, base, reg.matrix)
    to_follow = reg.inverse_matrix()
    outside_follow = _outside_field(base, follow, to_follow)

    # Lesion bounding boxes, once per film, for the footprints of paired measurement. Always
    # made: a footprint looked up in boxes that were skipped is silently empty.
    boxes_b = ndi.find_objects(np.asarray(base.labels))
    boxes_f = ndi.find_objects(np.asarray(follow.labels))

    rows: list[LesionChange] = []
    for g_index, g in enumerate(groups, start=1):
        # Segmented group areas: the rows share the group's totals in their proportions.
        seg_b = sum(area_b[i] for i in g.baseline_ids)
        seg_f = sum(area_f_raw[j] for j in g.followup_ids)
        total_b, total_f_raw = seg_b, seg_f
        total_f = total_f_raw / scale2
        if (params.paired and g.baseline_ids and g.followup_ids and total_b > 0 and total_f > 0
                and _one_rule(base, follow, g, max(total_f / total_b, total_b / total_f), params)):
            ratio = _group_ratio(base, follow, g, reg.matrix, to_follow, scale2, params, boxes_b, boxes_f)
            if ratio is not None:
                # The larger segmented side is taken as the more complete (over bone the cut and
                # the band rules take parts of a lesion away, they do not add); the other side
                # follows from the one rule's ratio.
                if total_b >= total_f / ratio:
                    total_f = total_b * ratio
                else:
                    total_b = total_f / ratio
                total_f_raw = total_f * scale2
        status = lesion_status(total_b, total_f, params)
        pct = 100.0 * (total_f - total_b) / total_b if total_b > 0 else None
        common = dict(group=g_index, relation=g.relation, group_area_baseline_mm2=total_b,
                      group_area_followup_mm2=total_f, change_pct=pct, status=status)
        if g.relation in (Relation.RESOLVED, Relation.NEW):
            # Labelled on one film only (the baseline when resolved): looked for at its place on
            # the other (paired measurement); found there, it is measured on both films.
            on_base = g.relation is Relation.RESOLVED
            for k in (g.baseline_ids if on_base else g.followup_ids):
                outside = bool((outside_follow if on_base else outside_base)[k - 1])
                found = None
                if not outside and params.paired:
                    found = (_paired_area(base, k, follow, to_follow, params, boxes_b) if on_base
                             else _paired_area(follow, k, base, reg.matrix, params, boxes_f))
                ab, af_raw = (area_b[k], 0.0) if on_base else (0.0, area_f_raw[k])
                ids = {"baseline_id": k, "followup_id": None} if on_base else {"baseline_id": None, "followup_id": k}
                if found is not None and found[1] > 0.0:
                    sigma, there = found
                    if on_base:
                        af_raw = there
                    else:
                        ab = there
                    af = af_raw / scale2
                    rows.append(LesionChange(
                        **ids, area_baseline_mm2=ab, area_followup_mm2=af, area_followup_raw_mm2=af_raw,
                        group=g_index, relation=Relation.UNLABELLED, group_area_baseline_mm2=ab,
                        group_area_followup_mm2=af, change_pct=100.0 * (af - ab) / ab if ab > 0 else None,
                        status=lesion_status(ab, af, params), other_film_signal_sigma=sigma))
                    continue
                rows.append(LesionChange(**ids, area_baseline_mm2=ab, area_followup_mm2=af_raw / scale2,
                                         area_followup_raw_mm2=af_raw, outside_other_field=outside,
                                         other_film_signal_sigma=None if found is None else found[0], **common))
            continue
        if len(g.baseline_ids) >= len(g.followup_ids):
            for i in g.baseline_ids:
                j = assigned.get(i) or max(g.followup_ids, key=lambda jj: (overlap[i, jj], -dist(i, jj)))
                share = area_b[i] / seg_b if seg_b > 0 else 1.0 / len(g.baseline_ids)
                rows.append(LesionChange(
                    baseline_id=i, followup_id=j, area_baseline_mm2=total_b * share,
                    area_followup_mm2=total_f * share, area_followup_raw_mm2=total_f_raw * share,
                    overlap_dice=dice(i, j), centroid_distance_mm=dist(i, j), **common))
        else:
            for j in g.followup_ids:
                i = assigned_rev.get(j) or max(g.baseline_ids, key=lambda ii: (overlap[ii, j], -dist(ii, j)))
                share = area_f_raw[j] / seg_f if seg_f > 0 else 1.0 / len(g.followup_ids)
                rows.append(LesionChange(
                    baseline_id=i, followup_id=j, area_baseline_mm2=total_b * share,
                    area_followup_mm2=total_f * share, area_followup_raw_mm2=total_f_raw * share,
                    overlap_dice=dice(i, j), centroid_distance_mm=dist(i, j), **common))
    logger.info("matched %d baseline and %d follow-up lesions into %d groups", n_base, n_follow, len(groups))
    return tuple(rows)
