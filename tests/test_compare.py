"""compare(): safety checks, change figures, category, comparison.json structure, end to end."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math

import numpy as np
import pytest

from calcimage.compare import (
    DAYS_PER_MONTH,
    Category,
    CompareParams,
    Comparison,
    Registration,
    Relation,
    Status,
    TransformKind,
    check_compatible,
    classify_change,
    compare,
    registration_mask,
)
from calcimage.errors import IncompatibleFilmsError, ParameterError
from calcimage.film import Film, FilmMetadata, SpacingSource
from calcimage.measure import Lesion, Measurement, RegionTotal
from calcimage.params import params_from_mapping
from calcimage.segment import LesionKind, Segmentation


def _scene(row_mm: np.ndarray, col_mm: np.ndarray, blobs: list[tuple[float, float, float]]) -> np.ndarray:
    """A limb with two bones, texture and blobs, in world mm (see test_register for the idea)."""
    centre = 80.0 + 4.0 * np.sin(row_mm / 37.0)
    half = 38.0 + 3.0 * np.sin(row_mm / 23.0 + 1.0) + 0.04 * row_mm
    tissue = np.sqrt(np.clip(1.0 - ((col_mm - centre) / half) ** 2, 0.0, None))
    image = tissue.copy()
    flare = 1.0 + 0.8 * np.exp(-((row_mm - 185.0) / 18.0) ** 2)
    for offset, radius in ((-12.0, 7.0), (13.0, 5.0)):
        d = np.abs(col_mm - centre - offset) / (radius * flare)
        image += 0.7 * np.sqrt(np.clip(1.0 - d**2, 0.0, None)) + 0.5 * np.exp(-(((d - 1.0) * radius) / 0.8) ** 2)
    image += 0.08 * (np.cos(0.3 * row_mm + 0.1 * col_mm) + np.cos(0.05 * row_mm - 0.27 * col_mm + 1.0)) * (tissue > 0)
    for r0, c0, rad in blobs:
        image += 0.8 * ((row_mm - r0) ** 2 + (col_mm - c0) ** 2 <= rad**2)
    return image


def _measured_film(blobs: list[tuple[float, float, float]], *, spacing: float = 0.5, shape=(400, 320),
                   pose: np.ndarray | None = None, metadata: FilmMetadata = FilmMetadata(),
                   region_of=lambda r_mm: "proximal" if r_mm < 100 else "distal",
                   unlabelled: tuple[int, ...] = ()) -> Measurement:
    """Render blobs (row_mm, col_mm, radius_mm) and measure them exactly (labels = footprints);
    blobs whose 0-based index is in ``unlabelled`` are rendered but not labelled (missed)."""
    rows, cols = shape
    rr, cc = np.meshgrid((np.arange(rows) + 0.5) * spacing, (np.arange(cols) + 0.5) * spacing, indexing="ij")
    wr, wc = (rr, cc) if pose is None else (pose[0, 0] * rr + pose[0, 1] * cc + pose[0, 2],
                                             pose[1, 0] * rr + pose[1, 1] * cc + pose[1, 2])
    film = Film(_scene(wr, wc, blobs).astype(np.float32), (spacing, spacing), SpacingSource.USER, metadata)
    labels = np.zeros(shape, np.int32)
    labelled = [b for i, b in enumerate(blobs) if i not in unlabelled]
    for k, (r0, c0, rad) in enumerate(labelled, start=1):
        labels[(wr - r0) ** 2 + (wc - c0) ** 2 <= rad**2] = k
    lesions = []
    for k in range(1, len(labelled) + 1):
        r, c = np.nonzero(labels == k)
        area = r.size * spacing**2
        lesions.append(Lesion(
            lesion_id=k, region=region_of(r.mean() * spacing), kind=LesionKind.NODULE, area_mm2=area,
            area_px=int(r.size), centroid_row=float(r.mean()), centroid_col=float(c.mean()),
            equivalent_diameter_mm=None, major_axis_mm=None, minor_axis_mm=None, perimeter_mm=None,
            eccentricity=0.0, solidity=1.0, mean_intensity=1.0, max_intensity=1.0, density_grade=2, burden=2 * area,
        ))
    names = sorted({l.region for l in lesions})
    regions = tuple(
        RegionTotal(n, sum(1 for l in lesions if l.region == n), sum(l.area_mm2 for l in lesions if l.region == n),
                    sum(l.area_px for l in lesions if l.region == n), sum(l.burden for l in lesions if l.region == n))
        for n in names
    )
    seg = Segmentation(labels=labels, kinds=(LesionKind.NODULE,) * len(labelled), threshold=1.0, threshold_low=0.5,
                       flattened=np.zeros(shape, np.float32))
    return Measurement(film=film, segmentation=seg, labels=labels, lesions=tuple(lesions), regions=regions)


def _pose(rotation_deg: float, magnification: float, shift_mm: tuple[float, float]) -> np.ndarray:
    a = math.radians(rotation_deg)
    lin = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) / magnification
    centre = np.array([100.0, 80.0])
    out = np.zeros((2, 3))
    out[:, :2] = lin
    out[:, 2] = centre + np.array(shift_mm) - lin @ centre
    return out


BLOBS = [(40.0, 70.0, 4.0), (60.0, 95.0, 3.0), (130.0, 60.0, 5.0), (160.0, 100.0, 2.5)]
META_B = FilmMetadata(patient_id="P1", study_date=dt.date(2026, 1, 10), laterality="L", view_position="AP",
                      body_part="FOREARM")
META_F = dataclasses.replace(META_B, study_date=dt.date(2026, 4, 10))


@pytest.fixture(scope="module")
def baseline() -> Measurement:
    return _measured_film(BLOBS, metadata=META_B)


# ------------------------------------------------------------------------------ parameters


def test_params_defaults_and_validation() -> None:
    p = CompareParams()
    assert (p.progression_pct, p.regression_pct, p.stable_pct, p.stable_mm2) == (25.0, -25.0, 20.0, 2.0)
    assert p.transform is TransformKind.SIMILARITY
    with pytest.raises(ParameterError, match="regression_pct"):
        CompareParams(regression_pct=10.0)
    with pytest.raises(ParameterError, match="registration_spacings_mm"):
        CompareParams(registration_spacings_mm=(1.0, 2.0))
    with pytest.raises(ParameterError, match="min_quality"):
        CompareParams(min_quality=1.5)


def test_params_from_toml_mapping() -> None:
    p = params_from_mapping(CompareParams, {"transform": "affine", "registration_spacings_mm": [2, 1],
                                            "allow_different_patients": True}, section="compare")
    assert p.transform is TransformKind.AFFINE
    assert p.registration_spacings_mm == (2.0, 1.0)
    with pytest.raises(ParameterError, match="unknown parameter compare.colour"):
        params_from_mapping(CompareParams, {"colour": 1}, section="compare")


# ------------------------------------------------------------------------------ safety


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"patient_id": "P2"}, r"different patients \(PatientID 'P1' vs 'P2'\)"),
        ({"laterality": "R"}, r"differ in laterality \('L' vs 'R'\)"),
        ({"view_position": "PA"}, r"differ in view position"),
        ({"body_part": "HAND"}, r"differ in body part"),
    ],
)
def test_incompatible_films_refused(baseline: Measurement, change: dict, message: str) -> None:
    other = _measured_film(BLOBS, metadata=dataclasses.replace(META_F, **change))
    with pytest.raises(IncompatibleFilmsError, match=message) as info:
        compare(baseline, other)
    assert "\n" not in str(info.value)


def test_refusals_can_be_overridden(baseline: Measurement) -> None:
    other = _measured_film(BLOBS, metadata=dataclasses.replace(META_F, patient_id="P2", laterality="R"))
    check_compatible(baseline, other, CompareParams(allow_different_patients=True, allow_different_views=True))
    with pytest.raises(IncompatibleFilmsError, match="laterality"):
        check_compatible(baseline, other, CompareParams(allow_different_patients=True))


def test_unknown_metadata_and_case_do_not_block(baseline: Measurement) -> None:
    check_compatible(baseline, _measured_film(BLOBS, metadata=FilmMetadata()))
    check_compatible(baseline, _measured_film(BLOBS, metadata=dataclasses.replace(META_F, laterality=" l ")))


def test_missing_spacing_refused(baseline: Measurement) -> None:
    bare = dataclasses.replace(baseline, film=Film(np.asarray(baseline.film.pixels), None, SpacingSource.NONE))
    with pytest.raises(IncompatibleFilmsError, match=r"follow-up film .* has no pixel spacing.*--spacing"):
        compare(baseline, bare)


# ------------------------------------------------------------------------------ category


@pytest.mark.parametrize(
    ("pct", "expected"),
    [(25.1, Category.PROGRESSION), (25.0, Category.STABLE), (-25.0, Category.STABLE),
     (-25.1, Category.REGRESSION), (0.0, Category.STABLE)],
)
def test_category_thresholds(pct: float, expected: Category) -> None:
    assert classify_change(pct, 100.0, 100.0 + pct) is expected


def test_category_parameters_and_empty_baseline() -> None:
    assert classify_change(20.0, 100.0, 120.0, CompareParams(progression_pct=15.0)) is Category.PROGRESSION
    assert classify_change(None, 0.0, 10.0) is Category.PROGRESSION
    assert classify_change(None, 0.0, 1.0) is Category.STABLE


# ------------------------------------------------------------------------------ end to end


def test_compare_retest_is_stable(baseline: Measurement) -> None:
    pose = _pose(4.0, 1.03, (6.0, -8.0))
    follow = _measured_film(BLOBS, metadata=META_F, pose=pose)
    result = compare(baseline, follow)
    assert result.registration.scale == pytest.approx(1.03, rel=3e-3)
    assert result.registration.rotation_deg == pytest.approx(4.0, abs=0.1)
    # raw follow-up area is ~6 % larger; at baseline magnification the change is ~0
    assert result.change["total_area_followup_raw_mm2"] > 1.04 * result.change["total_area_baseline_mm2"]
    assert abs(result.change["total_area_pct"]) < 3.0
    assert result.change["lesion_count"] == 0
    assert result.category is Category.STABLE
    assert [(r.baseline_id, r.followup_id, r.status) for r in result.lesions] == [
        (k, k, Status.STABLE) for k in range(1, 5)
    ]
    assert result.interval_days == 90
    assert result.interval_months == pytest.approx(90 / DAYS_PER_MONTH)


def test_compare_progression_with_new_and_resolved(baseline: Measurement) -> None:
    blobs = [(40.0, 70.0, 6.0), (60.0, 95.0, 3.0), (130.0, 60.0, 5.0), (120.0, 105.0, 3.0)]  # 1 grows, 4 gone, 1 new
    follow = _measured_film(blobs, metadata=META_F, pose=_pose(-3.0, 0.98, (-5.0, 4.0)))
    result = compare(baseline, follow)
    status = {(r.baseline_id, r.followup_id): r.status for r in result.lesions}
    assert status == {(1, 1): Status.GROWN, (2, 2): Status.STABLE, (3, 3): Status.STABLE,
                      (4, None): Status.RESOLVED, (None, 4): Status.NEW}
    true_pct = 100.0 * (36 + 9 + 25 + 9 - (16 + 9 + 25 + 6.25)) / (16 + 9 + 25 + 6.25)
    assert result.change["total_area_pct"] == pytest.approx(true_pct, abs=3.0)
    assert result.category is Category.PROGRESSION
    assert result.change["total_burden_pct"] == pytest.approx(result.change["total_area_pct"], abs=1e-6)
    regions = {r["name"]: r for r in result.regions}
    assert set(regions) == {"proximal", "distal"}
    assert regions["proximal"]["delta_lesion_count"] == 0
    assert regions["distal"]["lesion_count_baseline"] == 2 and regions["distal"]["lesion_count_followup"] == 2
    assert regions["proximal"]["delta_area_pct"] > 40.0


def test_lesion_missed_on_follow_up_is_measured_paired(baseline: Measurement) -> None:
    # Retest, but segmentation missed blob 2 (9π mm²) on the follow-up: paired measurement
    # finds it at its place, so nothing changed; unpaired, it would be resolved (−16 %).
    follow = _measured_film(BLOBS, metadata=META_F, pose=_pose(4.0, 1.03, (6.0, -8.0)), unlabelled=(1,))
    result = compare(baseline, follow)
    rows = {(r.baseline_id, r.followup_id): r for r in result.lesions}
    assert set(rows) == {(1, 1), (2, None), (3, 2), (4, 3)}
    missed = rows[(2, None)]
    assert (missed.relation, missed.status) == (Relation.UNLABELLED, Status.STABLE)
    assert missed.area_followup_mm2 == pytest.approx(9 * math.pi, rel=0.1)
    assert missed.area_followup_raw_mm2 == pytest.approx(missed.area_followup_mm2 * result.registration.scale ** 2)
    ch = result.change
    assert abs(ch["total_area_pct"]) < 3.0
    assert ch["unlabelled_area_followup_mm2"] == pytest.approx(missed.area_followup_mm2)
    assert ch["unlabelled_area_baseline_mm2"] == 0.0
    assert ch["segmented_area_followup_mm2"] == pytest.approx(
        follow.total_area_mm2 / result.registration.scale ** 2)
    assert ch["total_area_followup_mm2"] == pytest.approx(ch["segmented_area_followup_mm2"] + missed.area_followup_mm2)
    # counts stay the films' own; the lesion found unlabelled is counted apart
    assert (ch["lesion_count_baseline"], ch["lesion_count_followup"], ch["lesion_count"]) == (4, 3, -1)
    assert (ch["unlabelled_count_baseline"], ch["unlabelled_count_followup"]) == (0, 1)
    # the region totals carry it too (blob 2 lies in the proximal region), burden at its grade 2
    regions = {r["name"]: r for r in result.regions}
    assert abs(regions["proximal"]["delta_area_pct"]) < 3.0
    assert ch["total_burden_pct"] == pytest.approx(ch["total_area_pct"], abs=1e-6)
    assert result.category is Category.STABLE
    unpaired = compare(baseline, follow, CompareParams(paired=False))
    assert {(r.baseline_id, r.followup_id): r.status for r in unpaired.lesions}[(2, None)] is Status.RESOLVED
    assert unpaired.change["total_area_pct"] == pytest.approx(-100 * 9 / (16 + 9 + 25 + 6.25), abs=3.0)


def test_lesion_missed_on_baseline_is_measured_paired() -> None:
    base = _measured_film(BLOBS, metadata=META_B, unlabelled=(3,))
    follow = _measured_film(BLOBS, metadata=META_F, pose=_pose(-3.0, 0.98, (-5.0, 4.0)))
    # By default every matched group is measured by one rule too, which may move the
    # baseline side of a group (the larger side is kept): the accounting of the unlabelled
    # lesion is checked with the matched groups' segmented areas.
    assert abs(compare(base, follow).change["total_area_pct"]) < 3.0
    result = compare(base, follow, CompareParams(paired_all_matched=False))
    missed = [r for r in result.lesions if r.baseline_id is None]
    assert len(missed) == 1 and (missed[0].followup_id, missed[0].relation) == (4, Relation.UNLABELLED)
    assert missed[0].area_baseline_mm2 == pytest.approx(6.25 * math.pi, rel=0.1)
    assert abs(result.change["total_area_pct"]) < 3.0
    assert result.change["unlabelled_area_baseline_mm2"] == pytest.approx(missed[0].area_baseline_mm2)
    # the baseline's total stays its own (the reference of the change); the follow-up counts
    # the found lesion's change only
    ch = result.change
    assert ch["total_area_baseline_mm2"] == pytest.approx(base.total_area_mm2)
    assert ch["total_area_followup_mm2"] == pytest.approx(
        ch["segmented_area_followup_mm2"] - missed[0].area_baseline_mm2)
    assert ch["total_area_pct"] == pytest.approx(100 * ch["total_area_mm2"] / base.total_area_mm2)


def test_different_detector_spacing(baseline: Measurement) -> None:
    # Same anatomy and lesions on a finer detector: no change, scale 1.
    follow = _measured_film(BLOBS, metadata=META_F, spacing=0.4, shape=(500, 400), pose=_pose(2.0, 1.0, (3.0, 3.0)))
    result = compare(baseline, follow)
    assert result.registration.scale == pytest.approx(1.0, abs=3e-3)
    assert abs(result.change["total_area_pct"]) < 3.0
    assert all(r.status is Status.STABLE for r in result.lesions)


def test_to_dict_is_the_comparison_json_contract(baseline: Measurement) -> None:
    follow = _measured_film(BLOBS[:3], metadata=META_F, pose=_pose(1.0, 1.0, (2.0, 0.0)))
    result = compare(baseline, follow)
    d = result.to_dict()
    json.dumps(d)  # JSON-ready
    assert {"registration", "interval_days", "change", "category", "lesions", "regions"} <= set(d)
    assert "baseline" not in d and "followup" not in d  # the CLI adds the two summaries
    assert {"matrix", "scale", "quality"} <= set(d["registration"])
    assert np.shape(d["registration"]["matrix"]) == (2, 3)
    assert {"total_area_mm2", "total_area_pct", "lesion_count", "total_burden_pct"} <= set(d["change"])
    assert d["category"] in {"progression", "stable", "regression"}
    for row in d["lesions"]:
        assert {"baseline_id", "followup_id", "status", "area_baseline_mm2", "area_followup_mm2"} <= set(row)
        assert row["status"] in {"new", "resolved", "grown", "shrunk", "stable"}
    assert d["lesions"][-1] == {**d["lesions"][-1], "baseline_id": 4, "followup_id": None, "status": "resolved"}
    assert d["change"]["lesion_count"] == -1
    assert d["params"]["progression_pct"] == 25.0
    assert isinstance(result, Comparison)


def test_registration_masks(baseline: Measurement) -> None:
    coll = np.zeros(baseline.film.shape, bool)
    coll[:20] = True
    seg = dataclasses.replace(baseline.segmentation, excluded={"collimation": coll})
    mask = registration_mask(dataclasses.replace(baseline, segmentation=seg))
    assert mask is not None
    assert not mask[:20].any()
    assert mask[20:].all()
    assert registration_mask(baseline) is None


def test_registration_to_dict() -> None:
    reg = Registration(matrix=np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 3.0]]), scale=1.01, quality=0.9,
                       rotation_deg=1.5, translation_mm=(1.0, 1.5))
    d = reg.to_dict()
    assert d["matrix"] == [[1.0, 0.0, 2.0], [0.0, 1.0, 3.0]]
    assert (d["scale"], d["quality"], d["rotation_deg"], d["translation_mm"]) == (1.01, 0.9, 1.5, [1.0, 1.5])


def test_registration_inverse_matrix() -> None:
    # follow-up (row, col) -> baseline: scale 2, then shift (2, 3); the inverse halves and shifts back
    reg = Registration(matrix=np.array([[2.0, 0.0, 2.0], [0.0, 2.0, 3.0]]), scale=2.0, quality=0.9)
    np.testing.assert_allclose(reg.inverse_matrix(), [[0.5, 0.0, -1.0], [0.0, 0.5, -1.5]])
    rows, cols = reg.map_points([4.0, 10.0], [6.0, -2.0])
    back = reg.inverse_matrix() @ np.vstack([rows, cols, np.ones(2)])
    np.testing.assert_allclose(back, [[4.0, 10.0], [6.0, -2.0]])


def test_lesion_outside_common_field_warns(baseline: Measurement) -> None:
    from calcimage.errors import CalcimageWarning

    # The follow-up is shifted 30 mm up and shows a lesion above the baseline's field.
    follow = _measured_film(BLOBS + [(-15.0, 80.0, 3.0)], metadata=META_F, pose=_pose(0.0, 1.0, (-30.0, 0.0)))
    with pytest.warns(CalcimageWarning, match="1 new or resolved lesion.*outside the other film's field"):
        result = compare(baseline, follow)
    assert result.change["lesions_outside_common_field"] == 1
    flagged = [r for r in result.lesions if r.outside_other_field]
    assert [(r.baseline_id, r.followup_id, r.status) for r in flagged] == [(None, 5, Status.NEW)]


def test_follow_up_dated_before_baseline_warns(baseline: Measurement) -> None:
    from calcimage.errors import CalcimageWarning

    early = _measured_film(BLOBS, metadata=dataclasses.replace(META_B, study_date=dt.date(2025, 12, 1)))
    with pytest.warns(CalcimageWarning, match="before the baseline's 2026-01-10"):
        result = compare(baseline, early)
    assert result.interval_days == -40


# ------------------------------------------------------------------------------ shared bone


@pytest.fixture(scope="module")
def bone_pair() -> tuple[Measurement, Measurement]:
    from calcimage.measure import measure
    from calcimage.phantom import FollowupParams, PhantomParams, make_followup, make_phantom
    from calcimage.segment import SegmentParams, segment

    base = make_phantom(3, PhantomParams(rows=700, cols=560, spacing_mm=0.2, n_bones=1))
    follow = make_followup(base, 4, FollowupParams(rotation_deg=2.0, translation_mm=(3.0, -2.0), change="retest"))
    mb = measure(base.film, segment(base.film))
    # The follow-up's segmentation recognises no bone (an unreachable relative level).
    mf = measure(follow.film, segment(follow.film, SegmentParams(bone_min_relative=50.0)))
    return mb, mf


def test_share_bone_segments_the_film_missing_bone_again(bone_pair) -> None:
    from calcimage.match import warp_labels

    mb, mf = bone_pair
    bone_b = mb.segmentation.excluded["bone"]
    assert bone_b.sum() * 0.04 > 3000.0 and not mf.segmentation.excluded["bone"].any()
    result = compare(mb, mf)
    assert result.bone_shared == ("followup",) and result.to_dict()["bone_shared"] == ["followup"]
    assert result.baseline is mb and result.followup is not mf
    again = result.followup
    assert again.segmentation.params == mf.segmentation.params and again.film is mf.film
    # The follow-up now holds the baseline's bone (mapped onto it), within its body.
    inv = np.linalg.inv(np.vstack([result.registration.matrix, [0.0, 0.0, 1.0]]))[:2]
    mapped = warp_labels(bone_b.astype(np.int32), dataclasses.replace(result.registration, matrix=inv),
                         mf.film.shape) > 0
    body = ~mf.segmentation.excluded["outside_body"]
    bone_f = again.segmentation.excluded["bone"]
    assert np.count_nonzero(bone_f & mapped & body) >= 0.97 * np.count_nonzero(mapped & body)
    # Off, or below the area that triggers it: the follow-up is compared as measured.
    for params in (CompareParams(share_bone=False), CompareParams(share_bone_min_mm2=1e6)):
        plain = compare(mb, mf, params)
        assert plain.bone_shared == () and plain.followup is mf


def test_share_bone_leaves_hand_made_labellings(baseline: Measurement) -> None:
    follow = _measured_film(BLOBS, metadata=META_F, pose=_pose(1.0, 1.0, (2.0, 1.0)))
    result = compare(baseline, follow)
    assert result.bone_shared == () and result.baseline is baseline and result.followup is follow


def test_restore_shared_lesions_brings_back_what_both_films_show() -> None:
    from calcimage.compare import _restore_shared_lesions

    shape = (40, 50)
    old = np.zeros(shape, np.int32)
    old[5:10, 30:40] = 1   # lost again, shown by the other film: back
    old[20:25, 5:10] = 2   # lost again, nothing on the other film: stays lost
    old[30:35, 20:30] = 3  # kept by the new segmentation (as its label 1)
    own = Measurement(film=Film(np.zeros(shape, np.float32), (0.5, 0.5), SpacingSource.USER),
                      segmentation=Segmentation(labels=old, kinds=(LesionKind.PLAQUE, LesionKind.NODULE,
                                                                   LesionKind.NODULE),
                                                threshold=1.0, threshold_low=0.5, flattened=np.zeros(shape, np.float32)),
                      labels=old, lesions=(), regions=())
    new_labels = np.zeros(shape, np.int32)
    new_labels[30:35, 20:30] = 1
    new_labels[15:18, 40:45] = 2  # a lesion only the new segmentation has
    seg = Segmentation(labels=new_labels, kinds=(LesionKind.NODULE, LesionKind.NODULE), threshold=1.0,
                       threshold_low=0.5, flattened=np.zeros(shape, np.float32))
    other = np.zeros(shape, bool)
    other[6:9, 28:36] = True  # the other film's mapped lesion covers lesion 1 (24 of 50 px)
    other[0:2, 0:2] = True
    out = _restore_shared_lesions(seg, own, other)
    expected = np.zeros(shape, np.int32)
    expected[5:10, 30:40] = 1  # raster order: the restored lesion comes first
    expected[15:18, 40:45] = 2
    expected[30:35, 20:30] = 3
    assert np.array_equal(out.labels, expected)
    assert out.kinds == (LesionKind.PLAQUE, LesionKind.NODULE, LesionKind.NODULE)
    assert out.pixel_added is None  # no pixel model ran
    # A restored lesion the pixel model had added stays marked (the new ones' marks stand).
    marked = dataclasses.replace(own, segmentation=dataclasses.replace(own.segmentation, pixel_added=old == 1))
    new_marks = np.zeros(shape, bool)
    new_marks[15:18, 40:45] = True
    out2 = _restore_shared_lesions(dataclasses.replace(seg, pixel_added=new_marks), marked, other)
    assert np.array_equal(out2.labels, expected)
    np.testing.assert_array_equal(out2.pixel_added, (expected == 1) | (expected == 2))
    # Less than a fifth under the other film's lesions: not brought back.
    few = np.zeros(shape, bool)
    few[5:6, 30:39] = True  # 9 of 50 px
    assert _restore_shared_lesions(seg, own, few) is seg
