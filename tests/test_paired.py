"""Paired measurement (calcimage.match.measure_at / match_lesions with ``paired``): a lesion
labelled on one film only is looked for at its registered place on the other film.

Hand-made films: flat tissue with seeded white noise and flat-topped discs; labels are drawn
by hand, so a disc can be present on a film without being labelled there.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest

from calcimage.compare import CompareParams, Registration, Relation, Status
from calcimage.errors import ParameterError
from calcimage.film import Film, SpacingSource
from calcimage.match import footprint, match_lesions, measure_at
from calcimage.measure import Lesion, Measurement, RegionTotal
from calcimage.segment import LesionKind, Segmentation

FIELD_MM = 30.0
CENTRE_MM = (15.0, 15.0)
RADIUS_MM = 2.0
#: The selective one-rule measurement of matched groups (over bone, by the pixel model) alone.
SELECTIVE = CompareParams(paired_all_matched=False)
NOISE = 2.0


def _disc(shape: tuple[int, int], spacing: float, centre_mm: tuple[float, float], radius_mm: float) -> np.ndarray:
    rr, cc = np.meshgrid((np.arange(shape[0]) + 0.5) * spacing, (np.arange(shape[1]) + 0.5) * spacing,
                         indexing="ij")
    return (rr - centre_mm[0]) ** 2 + (cc - centre_mm[1]) ** 2 <= radius_mm**2


def _film(spacing: float, contrast: float, *, labelled: bool, seed: int, noise: float = NOISE,
          others: tuple[tuple[float, float, float], ...] = (), radius_mm: float = RADIUS_MM,
          ridge: float = 0.0, label_radius_mm: float | None = None) -> Measurement:
    """A film with one disc of ``contrast`` at CENTRE_MM (labelled or not; with
    ``label_radius_mm`` only its centre is labelled, as segmentation may find part of a plaque) and labelled
    ``others`` (row_mm, col_mm, radius_mm) of contrast 30."""
    n = int(round(FIELD_MM / spacing))
    shape = (n, n)
    pixels = 100.0 + noise * np.random.default_rng(seed).standard_normal(shape)
    disc = _disc(shape, spacing, CENTRE_MM, radius_mm)
    pixels[disc] += contrast
    # a cortex-like ridge 1.5 mm wide running down the film, through the disc's left half
    cols_mm = (np.arange(shape[1]) + 0.5) * spacing
    pixels[:, np.abs(cols_mm - (CENTRE_MM[1] - 1.0)) <= 0.75] += ridge
    labels = np.zeros(shape, np.int32)
    masks = []
    if labelled:
        masks.append(disc if label_radius_mm is None else _disc(shape, spacing, CENTRE_MM, label_radius_mm))
    for r, c, rad in others:
        m = _disc(shape, spacing, (r, c), rad)
        pixels[m] += 30.0
        masks.append(m)
    lesions = []
    for k, m in enumerate(masks, start=1):
        labels[m] = k
        rr, cc = np.nonzero(m)
        area = rr.size * spacing**2
        lesions.append(Lesion(
            lesion_id=k, region="film", kind=LesionKind.NODULE, area_mm2=area, area_px=int(rr.size),
            centroid_row=float(rr.mean()), centroid_col=float(cc.mean()), equivalent_diameter_mm=None,
            major_axis_mm=None, minor_axis_mm=None, perimeter_mm=None, eccentricity=0.0, solidity=1.0,
            mean_intensity=0.0, max_intensity=0.0, density_grade=2, burden=2 * area,
        ))
    film = Film(pixels.astype(np.float32), (spacing, spacing), SpacingSource.USER)
    seg = Segmentation(labels=labels, kinds=(LesionKind.NODULE,) * len(lesions), threshold=4.5 * noise,
                       threshold_low=1.125 * noise, flattened=np.zeros(shape, np.float32), threshold_k=4.5,
                       noise_sigma=noise)
    total = sum(l.area_mm2 for l in lesions)
    return Measurement(film=film, segmentation=seg, labels=labels, lesions=tuple(lesions),
                       regions=(RegionTotal("film", len(lesions), total, int((labels > 0).sum()), 2 * total),))


def _registration(base_spacing: float, follow_spacing: float) -> Registration:
    """Same anatomy, films on different detectors: follow-up pixel i is at (i + 0.5) × its
    spacing mm, i.e. baseline pixel (i + 0.5) × ratio − 0.5."""
    k = follow_spacing / base_spacing
    return Registration(matrix=np.array([[k, 0.0, 0.5 * k - 0.5], [0.0, k, 0.5 * k - 0.5]]), scale=1.0, quality=1.0)


DISC_MM2 = math.pi * RADIUS_MM**2


@pytest.mark.parametrize("spacing", [0.1, 0.2])
def test_lesion_unlabelled_on_follow_up_is_found_paired(spacing: float) -> None:
    base = _film(spacing, 30.0, labelled=True, seed=1)
    follow = _film(spacing, 30.0, labelled=False, seed=2)
    (row,) = match_lesions(base, follow, _registration(spacing, spacing))
    assert (row.baseline_id, row.followup_id, row.relation) == (1, None, Relation.UNLABELLED)
    assert row.status is Status.STABLE
    assert row.other_film_signal_sigma > 20.0
    # the disc's own pixel count on the follow-up (a pixel-sized rim may differ)
    assert row.area_followup_mm2 == pytest.approx(base.lesions[0].area_mm2, rel=0.06)
    assert row.group_area_followup_mm2 == row.area_followup_mm2
    assert row.change_pct == pytest.approx(100.0 * (row.area_followup_mm2 / row.area_baseline_mm2 - 1.0))


@pytest.mark.parametrize("spacing", [0.1, 0.2])
def test_truly_resolved_lesion_stays_resolved(spacing: float) -> None:
    base = _film(spacing, 30.0, labelled=True, seed=3)
    follow = _film(spacing, 0.0, labelled=False, seed=4)
    (row,) = match_lesions(base, follow, _registration(spacing, spacing))
    assert (row.baseline_id, row.followup_id, row.relation, row.status) == (1, None, Relation.RESOLVED, Status.RESOLVED)
    assert row.area_followup_mm2 == 0.0
    assert abs(row.other_film_signal_sigma) < 4.0


def test_new_lesion_unlabelled_on_baseline_is_found_paired() -> None:
    base = _film(0.1, 30.0, labelled=False, seed=5)
    follow = _film(0.1, 30.0, labelled=True, seed=6)
    (row,) = match_lesions(base, follow, _registration(0.1, 0.1))
    assert (row.baseline_id, row.followup_id, row.relation, row.status) == (None, 1, Relation.UNLABELLED, Status.STABLE)
    assert row.area_baseline_mm2 == pytest.approx(follow.lesions[0].area_mm2, rel=0.06)


def test_faint_offset_is_not_a_lesion() -> None:
    # Almost no noise: a 1/30 contrast offset is highly significant but far below the
    # lesion's own contrast (paired_min_fraction 0.2): it stays resolved.
    base = _film(0.1, 30.0, labelled=True, seed=7, noise=0.05)
    follow = _film(0.1, 1.0, labelled=False, seed=8, noise=0.05)
    (row,) = match_lesions(base, follow, _registration(0.1, 0.1))
    assert row.other_film_signal_sigma > 10.0
    assert row.status is Status.RESOLVED
    lenient = match_lesions(base, follow, _registration(0.1, 0.1), CompareParams(paired_min_fraction=0.01))
    assert lenient[0].relation is Relation.UNLABELLED


@pytest.mark.parametrize("spacing", [0.1, 0.2])
def test_lesion_resolved_from_over_a_ridge_stays_resolved(spacing: float) -> None:
    # On the follow-up only the ridge is left at the place: significant, and 0.3 of the
    # lesion-plus-ridge contrast, but no brighter than the ridge running on through the ring.
    base = _film(spacing, 15.0, labelled=True, seed=16, ridge=15.0)
    follow = _film(spacing, 0.0, labelled=False, seed=17, ridge=15.0)
    (row,) = match_lesions(base, follow, _registration(spacing, spacing))
    assert row.other_film_signal_sigma > 4.0
    assert (row.relation, row.status) == (Relation.RESOLVED, Status.RESOLVED)
    # the anatomy rule is what keeps it resolved
    lax = match_lesions(base, follow, _registration(spacing, spacing), CompareParams(paired_anatomy_fraction=0.2))
    assert lax[0].relation is Relation.UNLABELLED
    # the same lesion still there over the ridge is found
    kept = _film(spacing, 15.0, labelled=False, seed=18, ridge=15.0)
    (found,) = match_lesions(base, kept, _registration(spacing, spacing))
    assert (found.relation, found.status) == (Relation.UNLABELLED, Status.STABLE)


@pytest.mark.parametrize("spacing", [0.1, 0.2])
def test_truly_shrunk_lesion_stays_shrunk(spacing: float) -> None:
    # 4 mm -> 1.5 mm disc, each fully labelled: nothing is left at the rest of the old place
    base = _film(spacing, 30.0, labelled=True, seed=21, radius_mm=4.0)
    follow = _film(spacing, 30.0, labelled=True, seed=22, radius_mm=1.5)
    (row,) = match_lesions(base, follow, _registration(spacing, spacing))
    assert row.status is Status.SHRUNK
    assert row.area_followup_mm2 == pytest.approx(follow.lesions[0].area_mm2)
    assert row.area_baseline_mm2 == pytest.approx(base.lesions[0].area_mm2)


def test_paired_off_keeps_new_and_resolved() -> None:
    base = _film(0.1, 30.0, labelled=True, seed=1)
    follow = _film(0.1, 30.0, labelled=False, seed=2)
    (row,) = match_lesions(base, follow, _registration(0.1, 0.1), CompareParams(paired=False))
    assert (row.relation, row.status, row.other_film_signal_sigma) == (Relation.RESOLVED, Status.RESOLVED, None)


@pytest.mark.parametrize("spacing", [0.1, 0.2])
def test_grown_lesion_is_measured_beyond_the_margin(spacing: float) -> None:
    # radius 2 -> 3.5 mm (x3.06 area): the first zone (1 mm margin) is filled to its edge, so
    # the background is refitted beyond the lesion and its whole area counted
    base = _film(spacing, 30.0, labelled=True, seed=14)
    follow = _film(spacing, 30.0, labelled=False, seed=15, radius_mm=3.5)
    (row,) = match_lesions(base, follow, _registration(spacing, spacing))
    assert (row.relation, row.status) == (Relation.UNLABELLED, Status.GROWN)
    # one rule on both films: the baseline's label times the rule's follow-up/baseline ratio,
    # both measured grown beyond the margin
    here = measure_at([footprint(base, (1,), np.eye(3)[:2])], base, CompareParams(), (1,), force_grow=True)
    there = measure_at([footprint(base, (1,), np.eye(3)[:2])], follow, CompareParams())
    assert here.grew and there.grew
    assert row.area_followup_mm2 == pytest.approx(base.lesions[0].area_mm2 * there.area_px / here.area_px)
    # The hand-drawn label is the bare disc; the rule also takes the blurred rim (~0.37 mm)
    # on both films, which compresses the true growth (x3.06) a little.
    true_mm2 = float(_disc(follow.labels.shape, spacing, CENTRE_MM, 3.5).sum()) * spacing**2
    assert 0.85 * true_mm2 < row.area_followup_mm2 < true_mm2
    # without the second fit it stops at the margin (within radius 3 mm + the rim)
    capped = match_lesions(base, follow, _registration(spacing, spacing), CompareParams(paired_grow_mm=0.0))
    assert capped[0].area_followup_mm2 < 0.75 * row.area_followup_mm2


@pytest.mark.parametrize("spacing", [0.1, 0.2])
@pytest.mark.parametrize("unlabelled_on", ["follow-up", "baseline"])
def test_partly_labelled_lesion_keeps_its_share(spacing: float, unlabelled_on: str) -> None:
    # Segmentation found the central 1.2 mm of a 2.5 mm disc on one film and nothing on the
    # other. The rule grows to the whole disc on both films; its ratio (1) applies to the
    # labelled part, so the lesion is stable at that part's area on both films (measured
    # against the labelled part on one film, the whole disc would read as a 4-fold growth).
    labelled = _film(spacing, 30.0, labelled=True, seed=31, radius_mm=2.5, label_radius_mm=1.2)
    bare = _film(spacing, 30.0, labelled=False, seed=32, radius_mm=2.5)
    base, follow = (labelled, bare) if unlabelled_on == "follow-up" else (bare, labelled)
    (row,) = match_lesions(base, follow, _registration(spacing, spacing))
    assert (row.relation, row.status) == (Relation.UNLABELLED, Status.STABLE)
    part = labelled.lesions[0].area_mm2
    assert part == pytest.approx(math.pi * 1.2**2, rel=0.05)
    assert row.area_baseline_mm2 == pytest.approx(part, rel=0.05)
    assert row.area_followup_mm2 == pytest.approx(part, rel=0.05)


def test_other_detector_spacing_area_in_mm2() -> None:
    # follow-up on 0.2 mm pixels: its area comes in its own mm², equal to the baseline's disc
    base = _film(0.1, 30.0, labelled=True, seed=9)
    follow = _film(0.2, 30.0, labelled=False, seed=10)
    (row,) = match_lesions(base, follow, _registration(0.1, 0.2))
    assert row.relation is Relation.UNLABELLED
    assert row.area_followup_mm2 == pytest.approx(DISC_MM2, rel=0.08)


def test_labelled_neighbour_is_not_counted() -> None:
    # A labelled lesion 1 mm beyond the disc's edge on the follow-up: its pixels and rim are
    # its own, the unlabelled disc is still measured alone.
    neighbour = ((CENTRE_MM[0], CENTRE_MM[1] + RADIUS_MM + 2.5, 1.5),)
    base = _film(0.1, 30.0, labelled=True, seed=11)
    follow = _film(0.1, 30.0, labelled=False, seed=12, others=neighbour)
    rows = match_lesions(base, follow, _registration(0.1, 0.1))
    found = [r for r in rows if r.relation is Relation.UNLABELLED]
    assert len(found) == 1 and found[0].baseline_id == 1
    assert found[0].area_followup_mm2 == pytest.approx(base.lesions[0].area_mm2, rel=0.06)


@pytest.mark.parametrize("edge_fraction, level", [(0.3, 0.3), (0.0, 0.1)])
def test_measure_at_own_film_and_outside(edge_fraction: float, level: float) -> None:
    base = _film(0.1, 30.0, labelled=True, seed=13)
    ident = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    params = CompareParams(paired_edge_fraction=edge_fraction)
    here = measure_at([footprint(base, (1,), ident)], base, params, target_ids=(1,))
    assert here.footprint_px == base.lesions[0].area_px
    # segmentation's 0.3 mm smoothing takes contrast from the rim: the noise-free expectation
    disc = (base.labels == 1).astype(np.float32)
    expected = 30.0 * float(cv2.GaussianBlur(disc, (0, 0), 0.3 / 0.1)[disc > 0].mean())
    assert here.mean_contrast == pytest.approx(expected, abs=0.2)
    # the area is the smoothed disc above paired_edge_fraction of its peak (0: segmentation's
    # edge_fraction, 0.1, wider than the label)
    blurred = 30.0 * cv2.GaussianBlur(disc, (0, 0), 0.3 / 0.1)
    assert here.area_px == pytest.approx(int((blurred >= level * blurred.max()).sum()), rel=0.03)
    # mapped 100 mm away: off the film, nothing measured
    away = np.array([[1.0, 0.0, 1000.0], [0.0, 1.0, 0.0]])
    off = measure_at([footprint(base, (1,), away)], base, CompareParams())
    assert (off.signal_sigma, off.area_px, off.footprint_px) == (0.0, 0, 0)


@pytest.mark.parametrize("field, value", [("paired_min_sigma", 0.0), ("paired_min_fraction", 1.5),
                                          ("paired_margin_mm", -1.0), ("paired_ring_mm", 0.0),
                                          ("paired_grow_mm", -0.5), ("paired_anatomy_fraction", 2.0),
                                          ("paired_min_own_share", 1.5), ("paired", "yes")])
def test_paired_params_validated(field: str, value: object) -> None:
    with pytest.raises(ParameterError, match=field):
        CompareParams(**{field: value})


def test_not_paired_when_the_rule_cannot_see_the_lesion_on_its_own_film() -> None:
    # A label where the rule finds nothing on its own film (contrast 0): the rule has no area
    # there to scale by, so the disc at its place on the follow-up cannot give it a change.
    base = _film(0.1, 0.0, labelled=True, seed=41)
    follow = _film(0.1, 30.0, labelled=False, seed=42)
    (row,) = match_lesions(base, follow, _registration(0.1, 0.1))
    assert (row.relation, row.status, row.area_followup_mm2) == (Relation.RESOLVED, Status.RESOLVED, 0.0)
    assert row.other_film_signal_sigma is not None and row.other_film_signal_sigma > 10.0


def _with_segmentation(m: Measurement, **changes: object) -> Measurement:
    """``m`` with fields of its segmentation replaced."""
    return dataclasses.replace(m, segmentation=dataclasses.replace(m.segmentation, **changes))


def _over_bone(m: Measurement) -> Measurement:
    """``m`` with a bone mask over the whole film."""
    return _with_segmentation(m, excluded={"bone": np.ones(m.labels.shape, bool)})


def _assert_measured_by_one_rule(row: object, base: Measurement) -> None:
    """A stable one-to-one row whose larger (baseline) side is kept and whose follow-up
    follows from the one rule's ratio."""
    assert row.relation is Relation.ONE_TO_ONE and row.status is Status.STABLE
    assert row.area_baseline_mm2 == pytest.approx(base.lesions[0].area_mm2)
    assert row.area_followup_mm2 == pytest.approx(row.area_baseline_mm2, rel=0.1)


def _assert_areas_stand(cases: tuple, reg: Registration, followup_mm2: float) -> None:
    """Each (baseline, follow-up, params) of ``cases`` keeps its segmented areas: the
    follow-up's ``followup_mm2`` reads as shrunk."""
    for b, f, params in cases:
        (row,) = match_lesions(b, f, reg, params)
        assert row.status is Status.SHRUNK
        assert row.area_followup_mm2 == pytest.approx(followup_mm2)


@pytest.mark.parametrize("spacing", [0.1, 0.2])
def test_matched_lesion_cut_on_one_film_over_bone_is_measured_by_one_rule(spacing: float) -> None:
    # The same disc on both films; on the follow-up segmentation kept only its centre (what the
    # cortex-line cut leaves of a plaque over bone): 2.5 of 12.6 mm2, a ratio of 5.
    base = _over_bone(_film(spacing, 30.0, labelled=True, seed=21))
    follow = _over_bone(_film(spacing, 30.0, labelled=True, seed=22, label_radius_mm=0.9))
    reg = _registration(spacing, spacing)
    (row,) = match_lesions(base, follow, reg, SELECTIVE)
    _assert_measured_by_one_rule(row, base)
    # off, or not over bone: the segmented areas stand
    _assert_areas_stand(((base, follow, dataclasses.replace(SELECTIVE, paired_matched_ratio=0.0)),
                         (_film(spacing, 30.0, labelled=True, seed=21),
                          _film(spacing, 30.0, labelled=True, seed=22, label_radius_mm=0.9), SELECTIVE)),
                        reg, follow.lesions[0].area_mm2)


@pytest.mark.parametrize("spacing", [0.1, 0.2])
def test_matched_lesion_grown_less_than_the_ratio_keeps_its_segmented_areas(spacing: float) -> None:
    base = _over_bone(_film(spacing, 30.0, labelled=True, seed=23))
    follow = _over_bone(_film(spacing, 30.0, labelled=True, seed=24, radius_mm=RADIUS_MM * math.sqrt(2.5)))
    (row,) = match_lesions(base, follow, _registration(spacing, spacing), SELECTIVE)
    assert row.status is Status.GROWN
    assert (row.area_baseline_mm2, row.area_followup_mm2) == (
        pytest.approx(base.lesions[0].area_mm2), pytest.approx(follow.lesions[0].area_mm2))


def test_paired_matched_ratio_validation() -> None:
    for bad in (-1.0, 0.5, 1.0):
        with pytest.raises(ParameterError, match="paired_matched_ratio"):
            CompareParams(paired_matched_ratio=bad)


def _by_pixel_model(m: Measurement) -> Measurement:
    """``m`` with all its lesions marked as found by segmentation's pixel model."""
    return _with_segmentation(m, pixel_added=m.labels > 0)


@pytest.mark.parametrize("spacing", [0.1, 0.2])
def test_matched_lesion_found_by_the_pixel_model_on_one_film_is_measured_by_one_rule(spacing: float) -> None:
    # The same disc on both films, in soft tissue; on the follow-up the pixel model found its
    # centre only (6.2 of 12.6 mm2: a ratio of 2, under paired_matched_ratio).
    base = _film(spacing, 30.0, labelled=True, seed=25)
    part = _film(spacing, 30.0, labelled=True, seed=26, label_radius_mm=1.4)
    reg = _registration(spacing, spacing)
    (row,) = match_lesions(base, _by_pixel_model(part), reg, SELECTIVE)
    _assert_measured_by_one_rule(row, base)
    # Off, found the same way on both films, or by the rules on both: the areas stand.
    _assert_areas_stand(((base, _by_pixel_model(part), dataclasses.replace(SELECTIVE, paired_pixel_model=False)),
                         (_by_pixel_model(base), _by_pixel_model(part), SELECTIVE),
                         (base, part, SELECTIVE)), reg, part.lesions[0].area_mm2)
    with pytest.raises(ParameterError, match="paired_pixel_model"):
        CompareParams(paired_pixel_model=1)


@pytest.mark.parametrize("spacing", [0.1, 0.2])
def test_matched_lesion_found_by_the_pixel_model_on_both_films_far_apart_is_measured_by_one_rule(
        spacing: float) -> None:
    # The pixel model found the whole disc on the baseline and only its centre on the
    # follow-up (2.5 of 12.6 mm2: a ratio of 5, over paired_matched_ratio 3).
    base = _by_pixel_model(_film(spacing, 30.0, labelled=True, seed=27))
    core = _by_pixel_model(_film(spacing, 30.0, labelled=True, seed=28, label_radius_mm=0.9))
    reg = _registration(spacing, spacing)
    (row,) = match_lesions(base, core, reg, SELECTIVE)
    _assert_measured_by_one_rule(row, base)
    # With the ratio rule off, the segmented areas stand.
    (row,) = match_lesions(base, core, reg, dataclasses.replace(SELECTIVE, paired_matched_ratio=0.0))
    assert row.status is Status.SHRUNK
    assert row.area_followup_mm2 == pytest.approx(core.lesions[0].area_mm2)


@pytest.mark.parametrize("spacing", [0.1, 0.2])
def test_lesion_the_rule_hardly_sees_on_its_own_film_gets_the_rule_area_there(spacing: float) -> None:
    # The baseline labels a 3 mm disc where a dense 0.8 mm core is all the rule finds (7 % of
    # the footprint); the follow-up holds an unlabelled 3 mm disc. Scaled by the rule's ratio
    # (about 7) the follow-up reads some 235 mm²; the rule's own area there is the disc's
    # 28 mm² plus the noise pixels at the edge level along its rim (about 36 mm²).
    base = _film(spacing, 200.0, labelled=True, seed=29, radius_mm=0.8, label_radius_mm=3.0)
    follow = _film(spacing, 30.0, labelled=False, seed=30, radius_mm=3.0)
    reg = _registration(spacing, spacing)
    (row,) = match_lesions(base, follow, reg)
    assert row.relation is Relation.UNLABELLED
    assert math.pi * 3.0**2 <= row.area_followup_mm2 <= math.pi * 3.5**2
    # With the share at 0 the ratio is used whatever it is.
    (row,) = match_lesions(base, follow, reg, CompareParams(paired_min_own_share=0.0))
    assert row.area_followup_mm2 > 5 * math.pi * 3.0**2


def _by_segmentation(m: Measurement) -> Measurement:
    """``m`` as segmentation's labelling (a working scale; hand-made labels have none)."""
    return _with_segmentation(m, scale_spacing_mm=m.film.spacing_mm[0])


@pytest.mark.parametrize("spacing", [0.1, 0.2])
def test_every_matched_lesion_is_measured_by_one_rule_by_default(spacing: float) -> None:
    # The same disc on both films, in soft tissue, the rules' labels: segmentation found the
    # whole disc on the baseline and its centre only on the follow-up (6.2 of 12.6 mm2).
    drawn = _film(spacing, 30.0, labelled=True, seed=25)
    drawn_part = _film(spacing, 30.0, labelled=True, seed=26, label_radius_mm=1.4)
    base, part = _by_segmentation(drawn), _by_segmentation(drawn_part)
    reg = _registration(spacing, spacing)
    (row,) = match_lesions(base, part, reg)
    _assert_measured_by_one_rule(row, base)
    # whatever the selective rules are set to
    (row,) = match_lesions(base, part, reg, CompareParams(paired_matched_ratio=0.0, paired_pixel_model=False))
    _assert_measured_by_one_rule(row, base)
    # selectively (not over bone, not the pixel model's), or hand-made labels: the areas stand
    _assert_areas_stand(((base, part, SELECTIVE), (drawn, drawn_part, CompareParams())), reg,
                        part.lesions[0].area_mm2)


@pytest.mark.parametrize("spacing", [0.1, 0.2])
def test_the_rule_edge_above_the_rim_follows_growth(spacing: float) -> None:
    # A disc grown 2.5x in area, labelled whole on both films: the rule's ratio with its edge
    # at 30 % of the peak is near 2.5; at segmentation's 10 % the blurred rim, as wide on both
    # films, pulls it towards 1.
    base = _by_segmentation(_film(spacing, 30.0, labelled=True, seed=23))
    follow = _by_segmentation(_film(spacing, 30.0, labelled=True, seed=24, radius_mm=RADIUS_MM * math.sqrt(2.5)))
    reg = _registration(spacing, spacing)
    ratios = {}
    for fraction in (0.3, 0.0):
        (row,) = match_lesions(base, follow, reg, CompareParams(paired_edge_fraction=fraction))
        assert row.status is Status.GROWN
        ratios[fraction] = row.group_area_followup_mm2 / row.group_area_baseline_mm2
    assert ratios[0.3] == pytest.approx(2.5, rel=0.08)
    assert abs(ratios[0.3] - 2.5) < abs(ratios[0.0] - 2.5)


@pytest.mark.parametrize("field, value", [("paired_all_matched", 1), ("paired_edge_fraction", -0.1),
                                          ("paired_edge_fraction", 0.99)])
def test_all_matched_params_validated(field: str, value: object) -> None:
    with pytest.raises(ParameterError, match=field):
        CompareParams(**{field: value})
