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
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from calcimage.compare import CompareParams, LesionChange, Registration, Relation, Status
from calcimage.measure import Measurement

__all__ = ["MatchGroup", "warp_labels", "overlap_table", "group_lesions", "lesion_status", "match_lesions"]

logger = logging.getLogger(__name__)

#: Cost of a pair that must not match.
_FORBIDDEN = 1.0e6

_SWAP = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


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
    m_rc = np.vstack([np.asarray(registration.matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    # warpAffine with WARP_INVERSE_MAP wants destination (baseline) -> source (follow-up), in (x, y).
    inv_xy = _SWAP @ np.linalg.inv(m_rc) @ _SWAP
    labels = np.asarray(labels)
    if labels.size and int(labels.max()) >= 2**24:
        raise ValueError(f"too many labels to warp exactly ({int(labels.max())})")
    warped = cv2.warpAffine(labels.astype(np.float32), inv_xy[:2], (base_shape[1], base_shape[0]),
                            flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return warped.astype(np.int32)


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
    outside_follow = _outside_field(base, follow, np.linalg.inv(np.vstack([reg.matrix, [0.0, 0.0, 1.0]]))[:2])

    rows: list[LesionChange] = []
    for g_index, g in enumerate(groups, start=1):
        total_b = sum(area_b[i] for i in g.baseline_ids)
        total_f_raw = sum(area_f_raw[j] for j in g.followup_ids)
        total_f = total_f_raw / scale2
        status = lesion_status(total_b, total_f, params)
        pct = 100.0 * (total_f - total_b) / total_b if total_b > 0 else None
        common = dict(group=g_index, relation=g.relation, group_area_baseline_mm2=total_b,
                      group_area_followup_mm2=total_f, change_pct=pct, status=status)
        if g.relation is Relation.RESOLVED:
            for i in g.baseline_ids:
                rows.append(LesionChange(baseline_id=i, followup_id=None, area_baseline_mm2=area_b[i],
                                         area_followup_mm2=0.0, area_followup_raw_mm2=0.0,
                                         outside_other_field=bool(outside_follow[i - 1]), **common))
            continue
        if g.relation is Relation.NEW:
            for j in g.followup_ids:
                rows.append(LesionChange(baseline_id=None, followup_id=j, area_baseline_mm2=0.0,
                                         area_followup_mm2=area_f_raw[j] / scale2,
                                         area_followup_raw_mm2=area_f_raw[j],
                                         outside_other_field=bool(outside_base[j - 1]), **common))
            continue
        if len(g.baseline_ids) >= len(g.followup_ids):
            for i in g.baseline_ids:
                j = assigned.get(i) or max(g.followup_ids, key=lambda jj: (overlap[i, jj], -dist(i, jj)))
                share = area_b[i] / total_b if total_b > 0 else 1.0 / len(g.baseline_ids)
                rows.append(LesionChange(
                    baseline_id=i, followup_id=j, area_baseline_mm2=area_b[i],
                    area_followup_mm2=total_f * share, area_followup_raw_mm2=total_f_raw * share,
                    overlap_dice=dice(i, j), centroid_distance_mm=dist(i, j), **common))
        else:
            for j in g.followup_ids:
                i = assigned_rev.get(j) or max(g.baseline_ids, key=lambda ii: (overlap[ii, j], -dist(ii, j)))
                share = area_f_raw[j] / total_f_raw if total_f_raw > 0 else 1.0 / len(g.followup_ids)
                rows.append(LesionChange(
                    baseline_id=i, followup_id=j, area_baseline_mm2=total_b * share,
                    area_followup_mm2=area_f_raw[j] / scale2, area_followup_raw_mm2=area_f_raw[j],
                    overlap_dice=dice(i, j), centroid_distance_mm=dist(i, j), **common))
    logger.info("matched %d baseline and %d follow-up lesions into %d groups", n_base, n_follow, len(groups))
    return tuple(rows)
