#!/usr/bin/env python
"""Accuracy of calcimage.compare on phantom film pairs (issue 5). A script.

One command (from the repository root)::

    .venv/bin/python benchmarks/accuracy_pairs.py                  # held-out pairs 2000-2023
    .venv/bin/python benchmarks/accuracy_pairs.py --seeds 100-139  # development pairs (never quote)
    .venv/bin/python benchmarks/accuracy.py --no-films --pairs     # the same, through accuracy.py

Seeds
-----
- **Development seeds 100-199**: the only pairs looked at while building and choosing the
  registration / matching defaults.
- **Held-out seeds 2000-2023** (default): never used while developing; their figures are the
  ones published in docs/accuracy.md and docs/compare.md.

Each seed makes one pair deterministically (:func:`pair_case`): a baseline phantom (spacing
0.1 or 0.2 mm over a 150 x 120 mm field, 0-2 bones, MONOCHROME1/2 as metadata) and a follow-up
of the same limb rotated up to ±6°, shifted up to ±10 mm in each direction, magnified
0.97-1.03 and exposed ×0.7-1.4; every fourth follow-up (seed % 4 == 2) is taken on another
detector (its film and truth resampled from 0.1 to 0.15 mm pixels). Every third pair is a **retest** (same lesions; only position,
exposure and noise differ); the others evolve towards a total-area factor from 0.45 to 2.2
(lesions grow/shrink with per-lesion scatter, some resolve, one may be new).

Every pair is run three times:

- **pipeline**: ``segment`` → ``measure`` → ``compare`` with default parameters — the
  figures the targets apply to;
- **pipeline without paired measurement**: the same measurements compared with
  ``paired = false`` (lesions labelled on one film only count as new / resolved), so what
  pairing changes is seen on the same labels;
- **oracle**: ``compare`` on Measurements built from the phantom's true labels, which isolates
  registration + matching from segmentation.

Metrics (the issue's definitions)
---------------------------------
- |estimated − true total-area change| in percentage points (true change at baseline
  magnification, from the phantom): median ≤ 3, max ≤ 10;
- retest pairs: |estimated change| ≤ 5 % each;
- category (±25 %) correct on every pair whose true change is outside ±35 % or inside ±15 %;
- registration error at the follow-up's true lesion centroids (estimated vs true transform),
  in baseline mm: ≤ 1 mm (max over the lesions of each pair, every pair);
- oracle only: lesion fates — a lesion on both films paired with itself, a resolved one
  reported resolved, a new one new (phantom lesion ids are stable across films).

Output: a table on stdout, JSON at ``--out`` (default benchmarks/out/accuracy_pairs.json,
gitignored). Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import statistics
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import calcimage  # noqa: E402
from calcimage.compare import Category, CompareParams, classify_change, compare  # noqa: E402
from calcimage.errors import CalcimageError, CalcimageWarning  # noqa: E402
from calcimage.film import Film  # noqa: E402
from calcimage.match import overlap_table  # noqa: E402
from calcimage.measure import Lesion, Measurement, RegionTotal, measure  # noqa: E402
from calcimage.phantom import ChangeMode, FollowupParams, PhantomParams, make_followup, make_phantom  # noqa: E402
from calcimage.report.tables import provenance  # noqa: E402
from calcimage.segment import Segmentation, SegmentParams, segment  # noqa: E402
from _seeds import parse_seeds  # noqa: E402  (benchmarks/ is on sys.path when run)

DEVELOPMENT_SEEDS = range(100, 200)
HELD_OUT_SEEDS = range(2000, 2024)
DEFAULT_OUT = ROOT / "benchmarks" / "out" / "accuracy_pairs.json"
FIELD_MM = (150.0, 120.0)
AREA_FACTORS = (0.45, 0.6, 0.75, 0.9, 1.1, 1.3, 1.6, 2.2)
#: Pixel size of the "other detector" some follow-ups are taken on (seed % 4 == 2).
OTHER_DETECTOR_MM = 0.15

TARGETS = {
    "median_abs_change_error_pp": 3.0,
    "max_abs_change_error_pp": 10.0,
    "retest_max_abs_change_pct": 5.0,
    "category_errors_clear": 0,
    "max_registration_error_mm": 1.0,
}


@dataclass(frozen=True)
class PairCase:
    """The pair made from one seed."""

    seed: int
    spacing_mm: float
    n_bones: int
    monochrome1: bool
    followup: FollowupParams
    #: The follow-up taken on another detector: its film resampled to this pixel size.
    follow_spacing_mm: float | None = None

    @property
    def retest(self) -> bool:
        return self.followup.change is ChangeMode.RETEST

    def phantom_params(self) -> PhantomParams:
        return PhantomParams(
            rows=int(round(FIELD_MM[0] / self.spacing_mm)),
            cols=int(round(FIELD_MM[1] / self.spacing_mm)),
            spacing_mm=self.spacing_mm,
            n_bones=self.n_bones,
            monochrome1=self.monochrome1,
            fraction_over_bone=0.25 if self.n_bones else 0.0,
        )


def pair_case(seed: int) -> PairCase:
    """Deterministic pair for ``seed`` (positioning drawn from the seed, variants cycled)."""
    rng = np.random.default_rng([seed, 5])
    retest = seed % 3 == 0
    factor = AREA_FACTORS[(seed // 3 * 2 + seed % 3) % len(AREA_FACTORS)]
    followup = FollowupParams(
        rotation_deg=float(rng.uniform(-6.0, 6.0)),
        translation_mm=(float(rng.uniform(-10.0, 10.0)), float(rng.uniform(-10.0, 10.0))),
        magnification=float(rng.uniform(0.97, 1.03)),
        exposure=float(rng.uniform(0.7, 1.4)),
        change=ChangeMode.RETEST if retest else ChangeMode.EVOLVE,
        area_factor=1.0 if retest else factor,
        n_new=0 if retest else int(rng.integers(0, 2)),
    )
    return PairCase(seed=seed, spacing_mm=0.1 if seed % 2 == 0 else 0.2, n_bones=(2, 1, 2, 0)[(seed // 2) % 4],
                    monochrome1=seed % 4 == 1, followup=followup,
                    follow_spacing_mm=OTHER_DETECTOR_MM if seed % 4 == 2 else None)


def resampled_followup(film: Film, truth: Any, spacing_mm: float) -> tuple[Film, Any]:
    """The follow-up as a detector with ``spacing_mm`` pixels would record it: film and truth
    resampled (area averaging / linear; labels and masks nearest), truth transform composed
    with the resampling. The true change stays the phantom's (a physical quantity)."""
    import cv2

    rows, cols = film.shape
    old = film.spacing_mm
    new_rows, new_cols = int(round(rows * old[0] / spacing_mm)), int(round(cols * old[1] / spacing_mm))
    k_r, k_c = rows / new_rows, cols / new_cols  # old pixels per new pixel
    interp = cv2.INTER_AREA if k_r > 1 else cv2.INTER_LINEAR
    pixels = cv2.resize(np.asarray(film.pixels), (new_cols, new_rows), interpolation=interp)
    new_film = Film(pixels, (old[0] * k_r, old[1] * k_c), film.spacing_source, film.metadata)
    near = lambda a: cv2.resize(np.asarray(a).astype(np.float32), (new_cols, new_rows),  # noqa: E731
                                interpolation=cv2.INTER_NEAREST)
    labels = near(truth.labels).astype(np.int32)
    present = [k for k in range(1, truth.n_lesions + 1) if np.any(labels == k)]
    relabel = np.zeros(truth.n_lesions + 1, np.int32)
    relabel[present] = np.arange(1, len(present) + 1)
    labels = relabel[labels]
    px = new_film.spacing_mm[0] * new_film.spacing_mm[1]
    areas, centroids = [], []
    for k in range(1, len(present) + 1):
        rr, cc = np.nonzero(labels == k)
        areas.append(rr.size * px)
        centroids.append((float(rr.mean()), float(cc.mean())))
    # new pixel index -> old pixel index: old = (new + 0.5) k - 0.5
    to_old = np.array([[k_r, 0.0, 0.5 * k_r - 0.5], [0.0, k_c, 0.5 * k_c - 0.5], [0.0, 0.0, 1.0]])
    transform = (np.vstack([truth.transform, [0.0, 0.0, 1.0]]) @ to_old)[:2]
    new_truth = SimpleNamespace(
        labels=labels, n_lesions=len(present), kinds=tuple(truth.kinds[k - 1] for k in present),
        lesion_ids=tuple(truth.lesion_ids[k - 1] for k in present), areas_mm2=tuple(areas),
        centroids=tuple(centroids), total_area_mm2=float(sum(areas)),
        masks={name: near(m) > 0.5 for name, m in truth.masks.items()},
        transform=transform, magnification=truth.magnification,
        true_change_pct=truth.true_change_pct,
        area_mm2_at_baseline_magnification=truth.area_mm2_at_baseline_magnification,
    )
    return new_film, new_truth


def truth_measurement(film: Film, truth: Any) -> Measurement:
    """A Measurement whose lesions are the phantom's true footprints (the oracle)."""
    labels = np.asarray(truth.labels, dtype=np.int32)
    lesions = []
    for k in range(truth.n_lesions):
        area = float(truth.areas_mm2[k])
        row, col = truth.centroids[k]
        lesions.append(Lesion(
            lesion_id=k + 1, region="film", kind=truth.kinds[k], area_mm2=area,
            area_px=int(np.count_nonzero(labels == k + 1)), centroid_row=float(row), centroid_col=float(col),
            equivalent_diameter_mm=None, major_axis_mm=None, minor_axis_mm=None, perimeter_mm=None,
            eccentricity=0.0, solidity=1.0, mean_intensity=0.0, max_intensity=0.0, density_grade=1, burden=area,
        ))
    total = sum(l.area_mm2 for l in lesions)
    excluded = {"collimation": truth.masks["collimation"], "marker": truth.masks["marker"]}
    seg = Segmentation(labels=labels, kinds=tuple(truth.kinds), threshold=0.0, threshold_low=0.0,
                       flattened=np.zeros(labels.shape, np.float32), excluded=excluded)
    return Measurement(film=film, segmentation=seg, labels=labels, lesions=tuple(lesions),
                       regions=(RegionTotal("film", len(lesions), total, int((labels > 0).sum()), total),))


def registration_error_mm(comparison: Any, truth: Any, spacing_mm: float) -> float:
    """Largest distance, in baseline mm, between the estimated and true positions of the
    follow-up's true lesion centroids (the film centre when it has no lesion)."""
    cen = np.array(truth.centroids, dtype=np.float64).reshape(-1, 2)
    if cen.size == 0:
        cen = np.array([[truth.labels.shape[0] / 2.0, truth.labels.shape[1] / 2.0]])
    est_r, est_c = comparison.registration.map_points(cen[:, 0], cen[:, 1])
    t = np.asarray(truth.transform, dtype=np.float64)
    true_rc = t[:, :2] @ cen.T + t[:, 2:3]
    return float(np.hypot(est_r - true_rc[0], est_c - true_rc[1]).max() * spacing_mm)


def matching_score(rows: Any, base_truth: Any, follow_truth: Any) -> tuple[int, int]:
    """(correct, total) lesion fates for a comparison of the true label images: a lesion on
    both films must be paired with itself, a resolved one reported resolved, a new one new."""
    b_id = {k + 1: i for k, i in enumerate(base_truth.lesion_ids)}
    f_id = {k + 1: i for k, i in enumerate(follow_truth.lesion_ids)}
    paired = {(b_id[r.baseline_id], f_id[r.followup_id]) for r in rows
              if r.baseline_id is not None and r.followup_id is not None}
    # Paired measurement: a lesion labelled on one film only but found at its place on the other
    # (relation "unlabelled") is claimed present on both.
    unl = [r for r in rows if r.relation.value == "unlabelled"]
    found = {b_id[r.baseline_id] for r in unl if r.followup_id is None} | {f_id[r.followup_id] for r in unl if r.baseline_id is None}
    resolved = {b_id[r.baseline_id] for r in rows if r.followup_id is None and r.relation.value != "unlabelled"}
    new = {f_id[r.followup_id] for r in rows if r.baseline_id is None and r.relation.value != "unlabelled"}
    ids_b, ids_f = set(b_id.values()), set(f_id.values())
    correct = (sum((i, i) in paired or i in found for i in ids_b & ids_f) + len(resolved & (ids_b - ids_f))
               + len(new & (ids_f - ids_b)))
    return correct, len(ids_b | ids_f)


#: The sources of :func:`error_sources`, in the order they are printed.
ERROR_SOURCES = ("matched", "one_film", "unsegmented", "false", "baseline_total")


def error_sources(rows: Any, change: dict[str, Any], base_labels: np.ndarray, follow_labels: np.ndarray,
                  base_truth: Any, follow_truth: Any, true_pct: float) -> dict[str, float]:
    """Where a pair's change error comes from, in percentage points that sum to it exactly.

    Each true lesion belongs to the comparison group (``LesionChange.group``) whose labels
    cover most of its pixels on the two films. A group's error is its estimated change (the
    sum of its rows' follow-up less baseline areas, at the baseline's magnification) less the
    true change of its lesions. The sources, in points of the true baseline total:

    - ``matched``: groups labelled on both films (the one rule's ratio and the side kept);
    - ``one_film``: groups labelled on one film only, new, resolved or found at their place on
      the other film (what segmentation missed on one film);
    - ``unsegmented``: true lesions in no group, less their true change;
    - ``false``: groups on no true lesion, their whole estimate (a piece of a lesion that
      another group owns counts under its own relation, with no true change of its own);
    - ``baseline_total``: the estimate divides by its own baseline total, not the true one
      (what is left: estimated minus true change in percent, less the sum above; for a
      follow-up resampled to another detector it also holds the resampled truth's rounding).
    """
    base_total_true = float(base_truth.total_area_mm2)
    mag2 = float(follow_truth.magnification) ** 2
    true_b = dict(zip(base_truth.lesion_ids, base_truth.areas_mm2))
    true_f = {i: a / mag2 for i, a in zip(follow_truth.lesion_ids, follow_truth.areas_mm2)}
    # Pixels each film's labels share with its true lesions, in one pass per film.
    tables = {film: overlap_table(labels, truth.labels, int(np.max(labels, initial=0)), truth.n_lesions)
              for film, labels, truth in (("b", base_labels, base_truth), ("f", follow_labels, follow_truth))}
    ids = {"b": base_truth.lesion_ids, "f": follow_truth.lesion_ids}
    est: dict[int, float] = {}
    both: dict[int, bool] = {}
    cover: dict[tuple[int, int], int] = {}  # (true lesion id, group) -> pixels on both films
    seen: set[tuple[str, int]] = set()  # (film, label): a split's lesion is on several rows
    for r in rows:
        est[r.group] = est.get(r.group, 0.0) + (r.area_followup_mm2 or 0.0) - (r.area_baseline_mm2 or 0.0)
        both[r.group] = both.get(r.group, False) or (r.baseline_id is not None and r.followup_id is not None)
        for film, label in (("b", r.baseline_id), ("f", r.followup_id)):
            if label is None or (film, label) in seen:
                continue
            seen.add((film, label))
            counts = tables[film][label, 1:]
            for k in np.flatnonzero(counts):
                key = (ids[film][k], r.group)
                cover[key] = cover.get(key, 0) + int(counts[k])
    owner: dict[int, int] = {}  # true lesion id -> the group covering most of it
    for (lesion, group), n in sorted(cover.items()):
        if lesion not in owner or n > cover[(lesion, owner[lesion])]:
            owner[lesion] = group
    true_change = {i: true_f.get(i, 0.0) - true_b.get(i, 0.0) for i in set(true_b) | set(true_f)}
    owned_change: dict[int, float] = {}
    for lesion, group in owner.items():
        owned_change[group] = owned_change.get(group, 0.0) + true_change[lesion]
    on_truth = {group for _, group in cover}
    out = dict.fromkeys(ERROR_SOURCES, 0.0)
    for group, delta in est.items():
        source = "false" if group not in on_truth else "matched" if both[group] else "one_film"
        out[source] += delta - owned_change.get(group, 0.0)
    out["unsegmented"] = -sum(d for i, d in true_change.items() if i not in owner)
    scale = 100.0 / base_total_true if base_total_true > 0 else 0.0
    for k in ("matched", "one_film", "unsegmented", "false"):
        out[k] *= scale
    est_pct = change.get("total_area_pct")
    rest = (est_pct - true_pct) if est_pct is not None else 0.0
    out["baseline_total"] = rest - sum(out[k] for k in ("matched", "one_film", "unsegmented", "false"))
    return out


def _run_compare(base: Measurement, follow: Measurement, truth: Any, spacing: float,
                 params: CompareParams, truths: tuple[Any, Any] | None = None,
                 sources: tuple[Any, Any, float] | None = None) -> dict[str, Any]:
    """Compare and score one pair; ``truths`` (both films' truth) scores the lesion fates,
    ``sources`` (both films' truth and the true change) adds :func:`error_sources`."""
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CalcimageWarning)
            c = compare(base, follow, params)
    except CalcimageError as exc:
        return {"error": str(exc), "compare_seconds": time.perf_counter() - t0}
    dt = time.perf_counter() - t0
    return {
        "change_pct": c.change["total_area_pct"],
        "category": c.category.value,
        "scale": c.registration.scale,
        "quality": c.registration.quality,
        "rotation_deg": c.registration.rotation_deg,
        "registration_error_mm": registration_error_mm(c, truth, spacing),
        "area_baseline_mm2": c.change["total_area_baseline_mm2"],
        "area_followup_mm2": c.change["total_area_followup_mm2"],
        "lesions_baseline": c.change["lesion_count_baseline"],
        "lesions_followup": c.change["lesion_count_followup"],
        "statuses": {s: sum(1 for r in c.lesions if r.status.value == s)
                     for s in ("new", "resolved", "grown", "shrunk", "stable")},
        "compare_seconds": dt,
        "matching": None if truths is None else list(matching_score(c.lesions, *truths)),
        "error_sources": None if sources is None else error_sources(
            c.lesions, c.change, c.baseline.labels, c.followup.labels, *sources),
        "warnings": [str(w.message) for w in caught],
    }


def segmentation_errors(m: Measurement, truth: Any) -> dict[str, float]:
    """Where a film's measured total differs from the truth, in mm²: lesion area found on no
    true lesion (``false_mm2``, dilated truth by 1 mm), true area not found (``missed_mm2``)."""
    import cv2

    spacing = m.film.spacing_mm or (1.0, 1.0)
    px = spacing[0] * spacing[1]
    det = np.asarray(m.labels) > 0
    tru = np.asarray(truth.labels) > 0
    r = max(1, int(round(1.0 / min(spacing))))
    near = cv2.dilate(tru.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0
    return {
        "measured_mm2": float(m.total_area_mm2 or 0.0),
        "true_mm2": float(truth.total_area_mm2),
        "false_mm2": float(np.count_nonzero(det & ~near) * px),
        "missed_mm2": float(np.count_nonzero(tru & ~det) * px),
    }


def run_pair(seed: int, params: CompareParams = CompareParams(),
             seg_params: SegmentParams = SegmentParams()) -> dict[str, Any]:
    """Render, segment (``seg_params``), measure and compare the pair of ``seed``; score
    against the truth."""
    case = pair_case(seed)
    base = make_phantom(seed, case.phantom_params())
    follow = make_followup(base, seed + 50_000, case.followup)
    follow_film, follow_truth = follow.film, follow.truth
    if case.follow_spacing_mm is not None:
        follow_film, follow_truth = resampled_followup(follow_film, follow_truth, case.follow_spacing_mm)
    t0 = time.perf_counter()
    mb = measure(base.film, segment(base.film, seg_params))
    mf = measure(follow_film, segment(follow_film, seg_params))
    measure_seconds = time.perf_counter() - t0
    true_pct = float(follow.truth.true_change_pct)
    pipeline = _run_compare(mb, mf, follow_truth, case.spacing_mm, params,
                            sources=(base.truth, follow_truth, true_pct))
    # The same measurements without paired measurement: what pairing changes, on the same labels.
    unpaired = _run_compare(mb, mf, follow_truth, case.spacing_mm, dataclasses.replace(params, paired=False))
    oracle = _run_compare(truth_measurement(base.film, base.truth), truth_measurement(follow_film, follow_truth),
                          follow_truth, case.spacing_mm, params, truths=(base.truth, follow_truth))
    true_category = classify_change(true_pct, base.truth.total_area_mm2,
                                    follow.truth.area_mm2_at_baseline_magnification, params)
    for res in (pipeline, unpaired, oracle):
        if "error" not in res:
            res["abs_error_pp"] = abs(res["change_pct"] - true_pct) if res["change_pct"] is not None else math.inf
            res["category_correct"] = res["category"] == true_category.value
    fp = case.followup
    return {
        "seed": seed, "spacing_mm": case.spacing_mm, "follow_spacing_mm": case.follow_spacing_mm or case.spacing_mm,
        "n_bones": case.n_bones, "retest": case.retest,
        "rotation_deg": fp.rotation_deg, "translation_mm": list(fp.translation_mm),
        "magnification": fp.magnification, "exposure": fp.exposure, "area_factor": fp.area_factor,
        "true_change_pct": true_pct, "true_category": true_category.value,
        "clear_category": abs(true_pct) > 35.0 or abs(true_pct) < 15.0,
        "true_area_baseline_mm2": base.truth.total_area_mm2,
        "true_area_followup_mm2": follow.truth.area_mm2_at_baseline_magnification,
        "true_lesions": [base.truth.n_lesions, follow.truth.n_lesions],
        "measure_seconds": measure_seconds,
        "segmentation": {"baseline": segmentation_errors(mb, base.truth),
                         "followup": segmentation_errors(mf, follow_truth)},
        "pipeline": pipeline, "unpaired": unpaired, "oracle": oracle,
    }


def summarise(results: list[dict[str, Any]], which: str) -> dict[str, Any]:
    """Pooled figures of the ``pipeline`` or ``oracle`` runs."""
    runs = [(r, r[which]) for r in results]
    ok = [(r, x) for r, x in runs if "error" not in x]
    inf = math.inf
    # A refused pair counts as an infinite error: the maxima are infinite, the medians are not.
    errors = [inf if "error" in x else x["abs_error_pp"] for _, x in runs]
    failed = [r["seed"] for r, x in runs if "error" in x]
    retest = [inf if "error" in x else abs(x["change_pct"]) for r, x in runs
              if r["retest"] and ("error" in x or x["change_pct"] is not None)]
    clear = [(r, x) for r, x in runs if r["clear_category"]]
    cat_errors = [r["seed"] for r, x in clear if "error" in x or not x["category_correct"]]
    reg = [inf if "error" in x else x["registration_error_mm"] for _, x in runs]
    return {
        "pairs": len(results),
        "failed": failed,
        "median_abs_change_error_pp": statistics.median(errors) if errors else inf,
        "max_abs_change_error_pp": max(errors) if errors else inf,
        "retest_pairs": sum(1 for r in results if r["retest"]),
        "retest_max_abs_change_pct": max(retest) if retest else inf,
        "clear_category_pairs": len(clear),
        "category_errors_clear": len(cat_errors),
        "category_error_seeds": cat_errors,
        "category_correct_all": sum(1 for _, x in ok if x["category_correct"]),
        "max_registration_error_mm": max(reg) if reg else inf,
        "median_registration_error_mm": statistics.median(reg) if reg else inf,
        "median_compare_seconds": statistics.median(x["compare_seconds"] for _, x in runs),
        # Pairs over the maximum's target, by the source that made most of their error.
        "largest_error_source": _largest_sources(x for _, x in ok if x["abs_error_pp"] > TARGETS["max_abs_change_error_pp"]),
        "lesion_fates_correct": [sum(x["matching"][0] for _, x in ok if x.get("matching")),
                                 sum(x["matching"][1] for _, x in ok if x.get("matching"))],
    }


def _largest_sources(runs: Any) -> dict[str, int]:
    """How many of ``runs`` have each of :data:`ERROR_SOURCES` as their largest (absolute)."""
    out = dict.fromkeys(ERROR_SOURCES, 0)
    for x in runs:
        if x.get("error_sources"):
            out[max(ERROR_SOURCES, key=lambda k: abs(x["error_sources"][k]))] += 1
    return out


def targets_met(summary: dict[str, Any]) -> bool:
    """True when every target of the issue is met."""
    return all(summary[k] <= v for k, v in TARGETS.items())


def print_table(results: list[dict[str, Any]], pipeline: dict[str, Any], unpaired: dict[str, Any],
                oracle: dict[str, Any]) -> None:
    """Per-pair table and the pooled figures against the targets."""
    print(f"{'seed':>5} {'mm':>9} {'kind':>6} {'rot':>5} {'mag':>6} {'exp':>4} {'true%':>7} "
          f"{'est%':>7} {'err':>5} {'unp%':>7} {'cat':>4} {'reg_mm':>6} {'q':>5} {'oracle%':>8} {'o_err':>5} {'s':>5}")
    for r in results:
        p, o = r["pipeline"], r["oracle"]
        est = "fail" if "error" in p else f"{p['change_pct']:+7.1f}" if p["change_pct"] is not None else "n/a"
        err = "" if "error" in p else f"{p['abs_error_pp']:5.1f}"
        cat = "" if "error" in p else ("ok" if p["category_correct"] else "NO") + ("" if r["clear_category"] else "*")
        reg = "" if "error" in p else f"{p['registration_error_mm']:6.2f}"
        q = "" if "error" in p else f"{p['quality']:5.3f}"
        oest = "fail" if "error" in o else f"{o['change_pct']:+8.1f}"
        u = r["unpaired"]
        uest = "fail" if "error" in u or u["change_pct"] is None else f"{u['change_pct']:+7.1f}"
        oerr = "" if "error" in o else f"{o['abs_error_pp']:5.1f}"
        mm = f"{r['spacing_mm']:g}/{r['follow_spacing_mm']:g}"
        print(f"{r['seed']:>5} {mm:>9} {'retest' if r['retest'] else 'evolve':>6} "
              f"{r['rotation_deg']:+5.1f} {r['magnification']:6.3f} {r['exposure']:4.2f} "
              f"{r['true_change_pct']:+7.1f} {est:>7} {err:>5} {uest:>7} {cat:>4} {reg:>6} {q:>5} {oest:>8} {oerr:>5} "
              f"{p['compare_seconds']:5.2f}")
        if "error" in p:
            print(f"      pipeline failed: {p['error']}")
        elif p["abs_error_pp"] > 3.0 and o.get("abs_error_pp", math.inf) <= 3.0:
            sb, sf = r["segmentation"]["baseline"], r["segmentation"]["followup"]
            print(f"      segmentation: baseline {sb['measured_mm2']:.0f} mm² measured vs {sb['true_mm2']:.0f} true "
                  f"({sb['false_mm2']:.0f} false, {sb['missed_mm2']:.0f} missed); follow-up "
                  f"{sf['measured_mm2']:.0f} vs {sf['true_mm2']:.0f} ({sf['false_mm2']:.0f} false, "
                  f"{sf['missed_mm2']:.0f} missed)")
        if "error" not in p and p["abs_error_pp"] > 3.0 and p.get("error_sources"):
            print("      error sources (pp): " + ", ".join(
                f"{k.replace('_', ' ')} {p['error_sources'][k]:+.1f}" for k in ERROR_SOURCES))
    print("(* = true change within 15-35 %: category not scored)")
    print()
    for label, s in (("pipeline", pipeline), ("pipeline without paired measurement", unpaired),
                     ("oracle (true labels)", oracle)):
        print(f"{label}:")
        for key, target in TARGETS.items():
            value = s[key]
            print(f"  {key:<32} {value:8.2f}   target <= {target:<5} {'ok' if value <= target else 'MISSED'}")
        if s["lesion_fates_correct"][1]:
            c, n = s["lesion_fates_correct"]
            print(f"  lesion fates (paired / new / resolved) correct: {c} of {n}")
        if any(s["largest_error_source"].values()):
            print("  pairs over the maximum, by their largest error source: " + ", ".join(
                f"{k.replace('_', ' ')} {n}" for k, n in s["largest_error_source"].items() if n))
        print(f"  median registration error {s['median_registration_error_mm']:.3f} mm; "
              f"median compare time {s['median_compare_seconds']:.2f} s; failed {s['failed']}; "
              f"category errors on {s['category_error_seeds']}")


def run_pairs(seeds: list[int] | None = None, params: CompareParams = CompareParams(),
              verbose: bool = True, seg_params: SegmentParams = SegmentParams(),
              workers: int = 1) -> tuple[dict[str, Any], bool]:
    """The pair section: run every seed (in ``workers`` processes), print the table; returns
    (report, targets met). Results are in seed order whatever ``workers`` is."""
    seeds = list(HELD_OUT_SEEDS) if seeds is None else seeds
    job = functools.partial(run_pair, params=params, seg_params=seg_params)
    results = []
    with contextlib.ExitStack() as stack:
        # in this process when workers is 1 (no pickling; what accuracy.py --pairs runs)
        run = stack.enter_context(ProcessPoolExecutor(workers)).map if workers > 1 else map
        for s, res in zip(seeds, run(job, seeds)):
            results.append(res)
            if verbose:
                print(f"pair {s} done", file=sys.stderr)
    pipeline = summarise(results, "pipeline")
    unpaired = summarise(results, "unpaired")
    oracle = summarise(results, "oracle")
    prov = provenance(seg_params, params)
    if verbose:
        print_table(results, pipeline, unpaired, oracle)
        print("versions:", ", ".join(f"{k} {v}" for k, v in prov.items()))
    report = {
        "seeds": f"{seeds[0]}-{seeds[-1]}" if seeds else "",
        "held_out": all(s in HELD_OUT_SEEDS for s in seeds),
        "targets": TARGETS,
        "summary": {"pipeline": pipeline, "unpaired": unpaired, "oracle": oracle},
        "per_pair": results,
        "calcimage": calcimage.__version__,
        # The figures depend on these versions (OpenCV 5.0 -> 5.1 alone moved them slightly).
        "provenance": prov,
    }
    return report, targets_met(pipeline)


def markdown(report: dict[str, Any]) -> str:
    """The figures of a report as Markdown (the docs' pairs section is pasted from this)."""
    lines = ["| target | pipeline | oracle (true labels) |", "|---|---|---|"]
    names = {
        "median_abs_change_error_pp": "median \\|est − true\\| total-area change ≤ 3 pp",
        "max_abs_change_error_pp": "max \\|est − true\\| change ≤ 10 pp",
        "retest_max_abs_change_pct": "retest pairs: max \\|change\\| ≤ 5 %",
        "category_errors_clear": "category errors where \\|true\\| > 35 % or < 15 % (0 allowed)",
        "max_registration_error_mm": "registration error at lesion centroids ≤ 1 mm (max)",
    }
    p, o = report["summary"]["pipeline"], report["summary"]["oracle"]

    def fmt(v: Any) -> str:
        if isinstance(v, int):
            return str(v)
        return "failed" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.2f}"

    for key, label in names.items():
        lines.append(f"| {label} | {fmt(p[key])} | {fmt(o[key])} |")
    lines.append(f"| pairs failed (no result) | {len(p['failed'])} | {len(o['failed'])} |")
    if o["lesion_fates_correct"][1]:
        lines.append(f"| lesion fates correct (paired/new/resolved) | – | "
                     f"{o['lesion_fates_correct'][0]} of {o['lesion_fates_correct'][1]} |")
    lines += ["", "| seed | mm base/follow | kind | rot ° | mag | exposure | true % | pipeline % | oracle % "
              "| reg. error mm | quality |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["per_pair"]:
        pr, orc = r["pipeline"], r["oracle"]
        est = "fail" if "error" in pr else f"{pr['change_pct']:+.1f}"
        oest = "fail" if "error" in orc else f"{orc['change_pct']:+.1f}"
        reg = "" if "error" in pr else f"{pr['registration_error_mm']:.2f}"
        q = "" if "error" in pr else f"{pr['quality']:.3f}"
        lines.append(f"| {r['seed']} | {r['spacing_mm']:g}/{r['follow_spacing_mm']:g} | "
                     f"{'retest' if r['retest'] else 'evolve'} | {r['rotation_deg']:+.1f} | {r['magnification']:.3f} | "
                     f"{r['exposure']:.2f} | {r['true_change_pct']:+.1f} | {est} | {oest} | {reg} | {q} |")
    return "\n".join(lines) + "\n"


def _json_default(v: Any) -> Any:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    """Command line: ``accuracy_pairs.py [--seeds A-B] [--out FILE] [--config TOML]``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default=f"{HELD_OUT_SEEDS.start}-{HELD_OUT_SEEDS.stop - 1}",
                    help="pair seeds: 2000-2023 (held out, default) or within 100-199 (development)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output file")
    ap.add_argument("--config", type=Path, default=None,
                    help="TOML parameters ([segment] and [compare])")
    ap.add_argument("--workers", type=int, default=1, help="pairs run in this many processes")
    ap.add_argument("--markdown", action="store_true", help="also print the figures as Markdown tables")
    args = ap.parse_args(argv)
    config = None if args.config is None else calcimage.load_config(args.config)
    params = CompareParams() if config is None else config.compare
    seg_params = SegmentParams() if config is None else config.segment
    report, ok = run_pairs(parse_seeds(args.seeds), params, seg_params=seg_params, workers=args.workers)
    if args.markdown:
        print()
        print(markdown(_finite(report)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_finite(report), indent=1, default=_json_default), encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
