"""Unit tests for benchmarks/accuracy_pairs.py's scoring: where a pair's change error comes from."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from accuracy_pairs import ERROR_SOURCES, error_sources  # noqa: E402


def _truth(labels: np.ndarray, ids: tuple[int, ...], areas: tuple[float, ...], magnification: float = 1.0):
    return SimpleNamespace(labels=labels, lesion_ids=ids, areas_mm2=areas, n_lesions=len(ids),
                           total_area_mm2=float(sum(areas)), magnification=magnification)


def _row(group: int, b: int | None, f: int | None, area_b: float, area_f: float):
    return SimpleNamespace(group=group, baseline_id=b, followup_id=f, area_baseline_mm2=area_b,
                           area_followup_mm2=area_f)


@pytest.mark.parametrize("magnification", [1.0, 1.1])
def test_error_sources_split_a_pair_exactly(magnification: float) -> None:
    # True lesions: 7 grows 10 -> 15 mm², 8 resolves (6 -> 0), 9 is new (0 -> 4): +18.75 %.
    tb = np.zeros((10, 10), np.int32)
    tb[0:2, 0:2], tb[5:7, 5:7] = 1, 2  # truth labels 1, 2 = lesions 7, 8
    tf = np.zeros((10, 10), np.int32)
    tf[0:3, 0:2], tf[8:10, 0:2] = 1, 2  # lesions 7, 9
    m2 = magnification**2
    base_truth = _truth(tb, (7, 8), (10.0, 6.0))
    follow_truth = _truth(tf, (7, 9), (15.0 * m2, 4.0 * m2), magnification)
    true_pct = 100.0 * (19.0 - 16.0) / 16.0
    # Segmentation: lesion 7 on both films (group 1, read 9 -> 12), lesion 8 on the baseline only
    # (group 2, resolved), a false lesion on the baseline found again at its place (group 3,
    # 2 -> 2.5); lesion 9 is not segmented.
    sb = np.zeros((10, 10), np.int32)
    sb[0:2, 0:2], sb[5:7, 5:7], sb[3, 8] = 1, 2, 3
    sf = np.zeros((10, 10), np.int32)
    sf[0:3, 0:2] = 1
    rows = [_row(1, 1, 1, 9.0, 12.0), _row(2, 2, None, 6.0, 0.0), _row(3, 3, None, 2.0, 2.5)]
    est_pct = 100.0 * (14.5 - 17.0) / 17.0
    out = error_sources(rows, {"total_area_pct": est_pct}, sb, sf, base_truth, follow_truth, true_pct)
    assert tuple(out) == ERROR_SOURCES
    assert out["matched"] == pytest.approx(100.0 * (3.0 - 5.0) / 16.0)
    assert out["one_film"] == pytest.approx(0.0, abs=1e-12)  # the resolved lesion is read right
    assert out["false"] == pytest.approx(100.0 * 0.5 / 16.0)
    assert out["unsegmented"] == pytest.approx(-100.0 * 4.0 / 16.0)
    # dividing by the estimated baseline (17 mm²) instead of the true one (16 mm²)
    assert out["baseline_total"] == pytest.approx(100.0 * (-2.5 / 17.0 + 2.5 / 16.0))
    assert sum(out.values()) == pytest.approx(est_pct - true_pct)


def test_a_lesion_split_over_groups_belongs_to_the_one_covering_most() -> None:
    # One true lesion (5 -> 5 mm²), segmented as two pieces that are matched separately:
    # 6 px in group 1, 2 px in group 2. Its true change counts in group 1 only.
    t = np.zeros((6, 6), np.int32)
    t[0:2, 0:4] = 1
    truth = _truth(t, (3,), (5.0,))
    sb = np.zeros((6, 6), np.int32)
    sb[0:2, 0:3], sb[0:2, 3] = 1, 2
    rows = [_row(1, 1, 1, 3.0, 4.0), _row(2, 2, 2, 1.0, 1.5)]
    est_pct = 100.0 * (5.5 - 4.0) / 4.0
    out = error_sources(rows, {"total_area_pct": est_pct}, sb, sb, truth, truth, 0.0)
    assert out["matched"] == pytest.approx(100.0 * (1.0 + 0.5) / 5.0)  # both groups' estimates, one truth
    assert out["false"] == 0.0 and out["unsegmented"] == 0.0 and out["one_film"] == 0.0
    assert sum(out.values()) == pytest.approx(est_pct)


def test_a_split_lesion_covers_its_true_lesion_once() -> None:
    # True lesion 5 (7 -> 9 mm²): 3 px under baseline label 1, which splits into follow-up
    # labels 1 and 2 (group 1, two rows), and 4 px under baseline label 2, resolved (group 2).
    # Group 2 covers more of it and owns its change, however many rows group 1 has.
    t = np.zeros((4, 4), np.int32)
    t[0, 0:3], t[1, 0:4] = 1, 1
    truth = _truth(t, (5,), (7.0,))
    follow_truth = _truth(t, (5,), (9.0,))
    sb = np.zeros((4, 4), np.int32)
    sb[0, 0:3], sb[1, 0:4] = 1, 2
    sf = np.zeros((4, 4), np.int32)
    sf[3, 0], sf[3, 2] = 1, 2  # on no true lesion
    rows = [_row(1, 1, 1, 1.0, 1.0), _row(1, 1, 2, 1.0, 1.0), _row(2, 2, None, 4.0, 0.0)]
    est_pct = 100.0 * (2.0 - 6.0) / 6.0
    out = error_sources(rows, {"total_area_pct": est_pct}, sb, sf, truth, follow_truth, 100.0 * 2.0 / 7.0)
    assert out["one_film"] == pytest.approx(100.0 * (-4.0 - 2.0) / 7.0)
    assert out["matched"] == pytest.approx(0.0, abs=1e-12)
    assert sum(out.values()) == pytest.approx(est_pct - 100.0 * 2.0 / 7.0)
