"""Lesion matching on hand-made label images with known merges, splits, new and resolved lesions."""

from __future__ import annotations

import numpy as np
import pytest

from calcimage.compare import CompareParams, Registration, Relation, Status
from calcimage.film import Film, SpacingSource
from calcimage.match import group_lesions, lesion_status, match_lesions, overlap_table, warp_labels, warp_mask
from calcimage.measure import Lesion, Measurement, RegionTotal
from calcimage.segment import LesionKind, Segmentation


def _measurement(labels: np.ndarray, spacing: float = 0.5, region: str = "whole") -> Measurement:
    """A Measurement built directly from a label image (areas and centroids from the pixels)."""
    labels = np.asarray(labels, dtype=np.int32)
    n = int(labels.max())
    lesions = []
    for k in range(1, n + 1):
        rr, cc = np.nonzero(labels == k)
        area_mm2 = rr.size * spacing * spacing
        lesions.append(Lesion(
            lesion_id=k, region=region, kind=LesionKind.NODULE, area_mm2=area_mm2, area_px=int(rr.size),
            centroid_row=float(rr.mean()), centroid_col=float(cc.mean()), equivalent_diameter_mm=None,
            major_axis_mm=None, minor_axis_mm=None, perimeter_mm=None, eccentricity=0.0, solidity=1.0,
            mean_intensity=1.0, max_intensity=1.0, density_grade=1, burden=area_mm2,
        ))
    film = Film(np.zeros(labels.shape, np.float32), (spacing, spacing), SpacingSource.USER)
    seg = Segmentation(labels=labels, kinds=(LesionKind.NODULE,) * n, threshold=1.0, threshold_low=0.5,
                       flattened=np.zeros(labels.shape, np.float32))
    total = sum(l.area_mm2 for l in lesions)
    regions = (RegionTotal(region, n, total, int((labels > 0).sum()), total),)
    return Measurement(film=film, segmentation=seg, labels=labels, lesions=tuple(lesions), regions=regions)


def _identity(scale: float = 1.0) -> Registration:
    return Registration(matrix=np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), scale=scale, quality=1.0)


def _blank(shape: tuple[int, int] = (60, 60)) -> np.ndarray:
    return np.zeros(shape, np.int32)


# ------------------------------------------------------------------------------ building blocks


def test_overlap_table_counts() -> None:
    b = np.array([[1, 1, 0, 2], [1, 1, 0, 2], [0, 0, 0, 0]])
    f = np.array([[0, 1, 1, 0], [0, 1, 1, 2], [0, 0, 0, 2]])
    table = overlap_table(b, f, 2, 2)
    # rows: background, base 1, base 2; columns: background, follow 1, follow 2
    assert table.tolist() == [[0, 2, 1], [2, 2, 0], [1, 0, 1]]


def test_warp_labels_identity_and_shift() -> None:
    labels = _blank((20, 30))
    labels[5:8, 10:14] = 3
    assert np.array_equal(warp_labels(labels, _identity(), (20, 30)), labels)
    # follow-up (r, c) -> baseline (r + 2, c - 5)
    shifted = Registration(matrix=np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -5.0]]), scale=1.0, quality=1.0)
    out = warp_labels(labels, shifted, (20, 30))
    expected = _blank((20, 30))
    expected[7:10, 5:9] = 3
    assert np.array_equal(out, expected)
    assert out.dtype == np.int32
    # a bool mask warps the same way (onto a smaller grid: False outside)
    mask = warp_mask(labels > 0, shifted, (9, 30))
    assert mask.dtype == bool and mask.shape == (9, 30)
    assert np.array_equal(mask, expected[:9] > 0)


def test_warp_labels_scaled_to_finer_grid() -> None:
    labels = _blank((10, 10))
    labels[2:4, 6:8] = 1
    # baseline pixels are half the size: follow-up index i is baseline 2 i + 0.5
    reg = Registration(matrix=np.array([[2.0, 0.0, 0.5], [0.0, 2.0, 0.5]]), scale=1.0, quality=1.0)
    out = warp_labels(labels, reg, (20, 20))
    assert int((out == 1).sum()) == 16
    rr, cc = np.nonzero(out == 1)
    assert (rr.min(), rr.max(), cc.min(), cc.max()) == (4, 7, 12, 15)


@pytest.mark.parametrize(
    ("area_b", "area_f", "expected"),
    [
        (100.0, 150.0, Status.GROWN),
        (100.0, 119.0, Status.STABLE),  # within 20 %
        (100.0, 79.0, Status.SHRUNK),
        (3.0, 4.9, Status.STABLE),  # +63 % but within 2 mm²
        (3.0, 5.5, Status.GROWN),
        (10.0, 0.0, Status.RESOLVED),
        (0.0, 4.0, Status.NEW),
    ],
)
def test_lesion_status_thresholds(area_b: float, area_f: float, expected: Status) -> None:
    assert lesion_status(area_b, area_f) is expected


def test_lesion_status_parameters() -> None:
    assert lesion_status(100.0, 130.0, CompareParams(stable_pct=35.0)) is Status.STABLE
    assert lesion_status(3.0, 4.5, CompareParams(stable_mm2=0.0)) is Status.GROWN


# ------------------------------------------------------------------------------ scenarios


def test_one_to_one_grown_stable_new_resolved() -> None:
    b = _blank()
    b[5:15, 5:15] = 1  # grows
    b[30:40, 5:15] = 2  # stays
    b[45:50, 45:50] = 3  # resolves
    f = _blank()
    f[4:17, 4:17] = 1  # 169 px vs 100
    f[30:40, 5:16] = 2  # 110 px vs 100: stable
    f[10:14, 40:44] = 3  # new
    rows = match_lesions(_measurement(b), _measurement(f), _identity())
    by = {(r.baseline_id, r.followup_id): r for r in rows}
    assert set(by) == {(1, 1), (2, 2), (3, None), (None, 3)}
    assert by[(1, 1)].status is Status.GROWN and by[(1, 1)].relation is Relation.ONE_TO_ONE
    assert by[(1, 1)].area_baseline_mm2 == pytest.approx(25.0)
    assert by[(1, 1)].area_followup_mm2 == pytest.approx(42.25)
    assert by[(1, 1)].change_pct == pytest.approx(69.0)
    assert by[(2, 2)].status is Status.STABLE
    assert by[(3, None)].status is Status.RESOLVED and by[(3, None)].area_followup_mm2 == 0.0
    assert by[(None, 3)].status is Status.NEW and by[(None, 3)].area_followup_mm2 == pytest.approx(4.0)
    assert by[(None, 3)].change_pct is None
    assert len({r.group for r in rows}) == 4


def test_merge_two_into_one() -> None:
    b = _blank()
    b[10:20, 10:20] = 1  # 100 px = 25 mm²
    b[10:20, 22:27] = 2  # 50 px = 12.5 mm²
    f = _blank()
    f[10:20, 10:27] = 1  # 170 px = 42.5 mm² covers both and the gap
    rows = match_lesions(_measurement(b), _measurement(f), _identity())
    assert [(r.baseline_id, r.followup_id) for r in rows] == [(1, 1), (2, 1)]
    assert all(r.relation is Relation.MERGE for r in rows)
    assert rows[0].group == rows[1].group
    assert all(r.status is Status.STABLE for r in rows)  # 37.5 -> 42.5 mm²: +13 %
    # follow-up area shared in proportion to the baseline areas; sums equal the totals
    assert rows[0].area_followup_mm2 == pytest.approx(42.5 * 2 / 3)
    assert rows[1].area_followup_mm2 == pytest.approx(42.5 / 3)
    assert sum(r.area_followup_mm2 for r in rows) == pytest.approx(42.5)
    assert sum(r.area_baseline_mm2 for r in rows) == pytest.approx(37.5)
    assert rows[0].group_area_baseline_mm2 == pytest.approx(37.5)


def test_split_one_into_two_shrunk() -> None:
    b = _blank()
    b[10:30, 10:20] = 1  # 200 px = 50 mm²
    f = _blank()
    f[10:16, 10:20] = 1  # 60 px
    f[24:30, 10:20] = 2  # 60 px: 30 mm² in all, -40 %
    rows = match_lesions(_measurement(b), _measurement(f), _identity())
    assert [(r.baseline_id, r.followup_id) for r in rows] == [(1, 1), (1, 2)]
    assert all(r.relation is Relation.SPLIT and r.status is Status.SHRUNK for r in rows)
    assert sum(r.area_baseline_mm2 for r in rows) == pytest.approx(50.0)
    assert [r.area_followup_mm2 for r in rows] == pytest.approx([15.0, 15.0])
    assert rows[0].change_pct == pytest.approx(-40.0)


def test_sliver_overlap_does_not_merge() -> None:
    b = _blank()
    b[10:20, 10:20] = 1
    b[10:20, 21:31] = 2
    f = _blank()
    f[10:20, 10:22] = 1  # lesion 1, touching one column of lesion 2
    rows = match_lesions(_measurement(b), _measurement(f), _identity())
    by = {(r.baseline_id, r.followup_id): r for r in rows}
    assert set(by) == {(1, 1), (2, None)}
    assert by[(2, None)].status is Status.RESOLVED
    assert by[(1, 1)].relation is Relation.ONE_TO_ONE


def test_match_by_centroid_distance_without_overlap() -> None:
    b = _blank()
    b[10:13, 10:13] = 1  # a small lesion
    f = _blank()
    f[10:13, 14:17] = 1  # 4 px = 2 mm away, no overlap
    rows = match_lesions(_measurement(b), _measurement(f), _identity())
    assert [(r.baseline_id, r.followup_id) for r in rows] == [(1, 1)]
    assert rows[0].centroid_distance_mm == pytest.approx(2.0)
    assert rows[0].overlap_dice == 0.0
    # with a smaller search radius they are a resolved and a new lesion
    rows = match_lesions(_measurement(b), _measurement(f), _identity(), CompareParams(match_distance_mm=1.0))
    assert [(r.baseline_id, r.followup_id) for r in rows] == [(1, None), (None, 1)]


def test_assignment_prefers_best_overlap() -> None:
    # Two follow-up lesions overlap baseline 1; the better one is its partner, the other
    # (overlapping by more than the group fraction) makes it a split.
    b = _blank()
    b[10:20, 10:20] = 1
    b[40:50, 40:50] = 2
    f = _blank()
    f[10:20, 40:50] = 1  # unrelated new lesion
    f[40:50, 41:51] = 2  # baseline 2, shifted one column
    f[10:20, 10:19] = 3  # baseline 1
    rows = match_lesions(_measurement(b), _measurement(f), _identity())
    pairs = {(r.baseline_id, r.followup_id) for r in rows}
    assert pairs == {(1, 3), (2, 2), (None, 1)}


def test_magnification_divided_out() -> None:
    b = _blank()
    b[10:20, 10:20] = 1  # 25 mm²
    f = _blank()
    f[10:21, 10:21] = 1  # 121 px = 30.25 mm² on a film magnified 1.1x: 25 mm² at baseline
    rows = match_lesions(_measurement(b), _measurement(f), _identity(scale=1.1))
    assert rows[0].area_followup_raw_mm2 == pytest.approx(30.25)
    assert rows[0].area_followup_mm2 == pytest.approx(25.0)
    assert rows[0].status is Status.STABLE
    assert rows[0].change_pct == pytest.approx(0.0, abs=1e-9)


def test_registration_used_for_overlap() -> None:
    b = _blank()
    b[10:20, 10:20] = 1
    f = _blank()
    f[30:40, 35:45] = 1  # same lesion, film shifted by (20, 25) px
    reg = Registration(matrix=np.array([[1.0, 0.0, -20.0], [0.0, 1.0, -25.0]]), scale=1.0, quality=1.0)
    rows = match_lesions(_measurement(b), _measurement(f), reg)
    assert [(r.baseline_id, r.followup_id) for r in rows] == [(1, 1)]
    assert rows[0].overlap_dice == pytest.approx(1.0)
    assert rows[0].centroid_distance_mm == pytest.approx(0.0, abs=1e-9)
    assert match_lesions(_measurement(b), _measurement(f), _identity())[0].followup_id is None


def test_no_lesions_on_either_side() -> None:
    assert match_lesions(_measurement(_blank()), _measurement(_blank()), _identity()) == ()
    f = _blank()
    f[5:8, 5:8] = 1
    rows = match_lesions(_measurement(_blank()), _measurement(f), _identity())
    assert [(r.baseline_id, r.followup_id, r.status) for r in rows] == [(None, 1, Status.NEW)]


def test_group_lesions_complex_group() -> None:
    # base 1, 2 and follow 1, 2 all mutually overlapping strongly: one complex group
    overlap = np.array([[0, 0, 0], [0, 40, 30], [0, 30, 40]])
    groups, pairs = group_lesions(overlap, np.zeros((2, 2)))
    assert len(groups) == 1 and groups[0].relation is Relation.COMPLEX
    assert sorted(pairs) == [(1, 1), (2, 2)]


def test_inputs_unchanged() -> None:
    b = _blank()
    b[10:20, 10:20] = 1
    mb = _measurement(b)
    before = mb.labels.copy()
    match_lesions(mb, mb, _identity())
    assert np.array_equal(mb.labels, before)


def test_new_lesion_outside_baseline_field_is_flagged() -> None:
    b = _blank()
    b[10:20, 10:20] = 1
    f = _blank()
    f[10:20, 10:20] = 1
    f[50:55, 50:55] = 2  # maps to baseline (70, 52): beyond the baseline's 60 rows
    f[30:34, 30:34] = 3  # inside the baseline, but in its collimation
    reg = Registration(matrix=np.array([[1.0, 0.0, 20.0], [0.0, 1.0, 0.0]]), scale=1.0, quality=1.0)
    b[:] = 0
    b[30:40, 10:20] = 1  # the same lesion 1, in baseline coordinates
    mb = _measurement(b)
    coll = np.zeros((60, 60), bool)
    coll[45:, :] = True
    mb = Measurement(film=mb.film, segmentation=Segmentation(labels=mb.labels, kinds=mb.segmentation.kinds,
                     threshold=1.0, threshold_low=0.5, flattened=mb.segmentation.flattened,
                     excluded={"collimation": coll}), labels=mb.labels, lesions=mb.lesions, regions=mb.regions)
    f[30:34, 30:34] = 0
    f[28:32, 30:34] = 3  # -> baseline rows 48-51: collimated there
    rows = match_lesions(mb, _measurement(f), reg)
    flags = {(r.baseline_id, r.followup_id): r.outside_other_field for r in rows}
    assert flags == {(1, 1): False, (None, 2): True, (None, 3): True}


def test_resolved_lesion_outside_followup_field_is_flagged() -> None:
    b = _blank()
    b[5:9, 5:9] = 1  # maps to follow-up row -15: outside
    b[30:34, 30:34] = 2  # inside, really resolved
    reg = Registration(matrix=np.array([[1.0, 0.0, 20.0], [0.0, 1.0, 0.0]]), scale=1.0, quality=1.0)
    rows = match_lesions(_measurement(b), _measurement(_blank()), reg)
    assert {(r.baseline_id, r.outside_other_field) for r in rows} == {(1, True), (2, False)}
