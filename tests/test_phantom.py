"""Synthetic phantoms: determinism, truth consistency, follow-up geometry, the Otsu yardstick."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.measure import regionprops

from calcimage.errors import ParameterError
from calcimage.phantom import (
    MASK_NAMES,
    ChangeMode,
    FollowupParams,
    PhantomParams,
    make_followup,
    make_phantom,
    marker_glyphs,
)
from calcimage.segment import LesionKind

#: A small film (120 x 110 mm at 0.2 mm) so the tests stay fast.
SMALL = PhantomParams(rows=600, cols=550, spacing_mm=0.2, limb_width_mm=(55.0, 70.0))


@pytest.fixture(scope="module")
def base():
    return make_phantom(11, SMALL)


@pytest.fixture(scope="module")
def retest(base):
    return make_followup(
        base, 12,
        FollowupParams(rotation_deg=-4.0, translation_mm=(6.0, -5.0), magnification=1.03,
                       exposure=0.8, change=ChangeMode.RETEST),
    )


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.count_nonzero(a & b)) / float(np.count_nonzero(a) + np.count_nonzero(b))


# ----------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_film_and_truth(base):
    again = make_phantom(11, SMALL)
    assert np.array_equal(again.film.pixels, base.film.pixels)
    assert np.array_equal(again.truth.labels, base.truth.labels)
    assert again.truth.areas_mm2 == base.truth.areas_mm2
    for name in MASK_NAMES:
        assert np.array_equal(again.truth.masks[name], base.truth.masks[name])


def test_same_seed_gives_identical_followup(base):
    params = FollowupParams(area_factor=1.4, n_new=2)
    one = make_followup(base, 5, params)
    two = make_followup(base, 5, params)
    assert np.array_equal(one.film.pixels, two.film.pixels)
    assert np.array_equal(one.truth.labels, two.truth.labels)
    assert one.truth.true_change_pct == two.truth.true_change_pct


def test_different_seeds_give_different_films(base):
    other = make_phantom(12, SMALL)
    assert not np.array_equal(other.film.pixels, base.film.pixels)


def test_global_numpy_random_state_is_untouched():
    np.random.seed(123)
    expected = np.random.random(3)
    np.random.seed(123)
    make_phantom(3, SMALL)
    assert np.array_equal(np.random.random(3), expected)


# ----------------------------------------------------------------------------- the film


@pytest.mark.parametrize("bits", [10, 12, 16])
def test_pixels_are_whole_numbers_within_bits_stored(bits):
    ph = make_phantom(4, PhantomParams(**{**SMALL.__dict__, "bits_stored": bits}))
    px = ph.film.pixels
    assert px.dtype == np.float32 and px.shape == (600, 550)
    assert np.array_equal(px, np.rint(px))
    assert px.min() >= 0 and px.max() <= 2**bits - 1
    # The film uses a good part of its range (not a flat image).
    assert px.max() - px.min() > 0.4 * (2**bits - 1)
    assert ph.film.metadata.bits_stored == bits
    assert ph.film.spacing_mm == (0.2, 0.2)


def test_brightness_order_follows_density(base):
    """Brighter = denser: air < soft tissue < bone < collimated border; the marker is brightest."""
    px, m = base.film.pixels, base.truth.masks
    field = ~m["collimation"]
    air = np.median(px[field & ~m["body"] & ~m["marker"]])
    tissue = np.median(px[field & m["body"] & ~m["bone"] & (base.truth.labels == 0)])
    cortex = np.median(px[field & m["cortex"]])
    border = np.median(px[m["collimation"]])
    marker = np.median(px[m["marker"]])
    assert air < tissue < cortex < border
    assert marker >= np.percentile(px[field], 99.9)


def test_masks_are_boolean_and_consistent(base):
    m = base.truth.masks
    assert set(m) == set(MASK_NAMES)
    for name in MASK_NAMES:
        assert m[name].dtype == bool and m[name].shape == base.film.shape
    assert not (m["cortex"] & ~m["bone"]).any()
    assert not (m["bone"] & ~m["body"]).any()
    assert m["marker"].any() and not (m["marker"] & m["body"]).any()
    assert not (m["marker"] & m["collimation"]).any()
    assert m["collimation"][0, 0] and m["collimation"][-1, -1]  # borders are collimated


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_heel_effect_makes_one_end_brighter_in_air(seed):
    """The anode heel lowers exposure towards the last rows: air gets denser down the film."""
    ph = make_phantom(seed, SMALL)
    px, m = ph.film.pixels, ph.truth.masks
    air = ~m["body"] & ~m["collimation"] & ~m["marker"]
    rows = np.nonzero(air.any(axis=1))[0]
    top = px[rows[: 100]][air[rows[: 100]]].mean()
    bottom = px[rows[-100:]][air[rows[-100:]]].mean()
    assert bottom > top


# ----------------------------------------------------------------------------- the truth


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_truth_is_consistent_with_labels(seed):
    ph = make_phantom(seed, SMALL)
    t = ph.truth
    n = t.n_lesions
    assert t.labels.dtype == np.int32 and t.labels.shape == ph.film.shape
    assert n > 0 and int(t.labels.max()) == n
    assert set(np.unique(t.labels)) == set(range(n + 1))
    pixel_area = 0.2 * 0.2
    counts = np.bincount(t.labels.ravel(), minlength=n + 1)[1:]
    assert t.areas_mm2 == pytest.approx(tuple(counts * pixel_area), rel=1e-12)
    assert t.total_area_mm2 == pytest.approx(counts.sum() * pixel_area, rel=1e-12)
    for k in range(1, n + 1):
        rr, cc = np.nonzero(t.labels == k)
        assert t.centroids[k - 1] == pytest.approx((rr.mean(), cc.mean()), abs=1e-9)
    assert all(isinstance(kind, LesionKind) for kind in t.kinds)
    assert len(set(t.lesion_ids)) == n
    assert len(t.contrasts) == len(t.over_bone) == n
    assert t.true_change_pct == 0.0 and t.magnification == 1.0
    assert np.array_equal(t.transform, np.eye(2, 3))
    assert t.baseline_total_area_mm2 == t.total_area_mm2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lesions_are_in_the_body_in_the_field_and_apart(seed):
    ph = make_phantom(seed, SMALL)
    t = ph.truth
    lesion = t.labels > 0
    assert not (lesion & ~t.masks["body"]).any()
    assert not (lesion & t.masks["collimation"]).any()
    assert not (lesion & t.masks["marker"]).any()
    # Different lesions never touch: a 1-pixel dilation of one meets no other.
    for k in range(1, t.n_lesions + 1):
        grown = ndimage.binary_dilation(t.labels == k)
        others = t.labels[grown]
        assert set(np.unique(others)) <= {0, k}


def test_default_phantom_has_both_kinds_some_over_bone_and_a_range_of_density():
    kinds, over, contrasts = [], [], []
    for seed in range(4):
        t = make_phantom(seed, SMALL).truth
        kinds += t.kinds
        over += t.over_bone
        contrasts += t.contrasts
    assert LesionKind.NODULE in kinds and LesionKind.PLAQUE in kinds
    assert 0 < sum(over) < 0.5 * len(over)  # most in soft tissue, some over bone
    assert min(contrasts) < 0.08 and max(contrasts) > 0.4  # faint to bone-like


def test_lesion_sizes_match_their_kind():
    spacing = 0.2
    for seed in range(3):
        t = make_phantom(seed, SMALL).truth
        for region in regionprops(t.labels):
            kind = t.kinds[region.label - 1]
            major_mm = region.axis_major_length * spacing
            minor_mm = region.axis_minor_length * spacing
            if kind is LesionKind.NODULE:
                assert 0.5 <= major_mm <= 12.0 * 1.5
            else:
                assert 8.0 <= major_mm <= 40.0 * 1.1
                assert minor_mm <= 6.0 * 1.5
                assert major_mm > 1.8 * minor_mm


def test_dense_lesions_are_brighter_than_their_surroundings(base):
    px, t = base.film.pixels, base.truth
    checked = 0
    for k in range(1, t.n_lesions + 1):
        if t.contrasts[k - 1] < 0.2:
            continue
        inside = t.labels == k
        ring = ndimage.binary_dilation(inside, iterations=8) & ~ndimage.binary_dilation(inside, iterations=3)
        ring &= t.labels == 0
        assert px[inside].mean() > px[ring].mean()
        checked += 1
    assert checked > 0


def test_a_plain_otsu_threshold_fails_on_the_phantom():
    """The yardstick discriminates: a global Otsu threshold scores Dice < 0.5."""
    for seed, params in [(0, PhantomParams()), (1, SMALL), (2, SMALL)]:
        ph = make_phantom(seed, params)
        otsu = ph.film.pixels > threshold_otsu(ph.film.pixels)
        assert _dice(otsu, ph.truth.labels > 0) < 0.5


# ----------------------------------------------------------------------------- visibility floor

#: Faint lesions, bones and a low dose: the floor has work to do.
FAINT = PhantomParams(**{**SMALL.__dict__, "density": (0.02, 0.1), "fraction_over_bone": 0.4,
                         "dose_photons_per_mm2": 20000.0})


@pytest.mark.parametrize("seed", [3, 4])
@pytest.mark.parametrize("min_cnr", [3.0, 5.0])
def test_every_lesion_meets_the_visibility_floor(seed, min_cnr):
    t = make_phantom(seed, replace(FAINT, min_lesion_cnr=min_cnr)).truth
    assert t.n_lesions >= 8 and any(t.over_bone)
    assert len(t.background_std) == t.n_lesions and min(t.background_std) > 0
    assert min(t.cnr) >= min_cnr
    assert min(t.cnr) < min_cnr * 1.01  # lesions are raised to the floor, not beyond it
    # The floor is where the density was raised: these lesions are drawn far fainter.
    raw = make_phantom(seed, replace(FAINT, min_lesion_cnr=0.0)).truth
    assert min(raw.cnr) < 1.0


def test_lesions_over_bone_need_more_contrast():
    # Pooled over three films: a lesion that would need more than 1.5 x cortical bone is
    # placed elsewhere, so one film holds only a handful of lesions over bone.
    bone, soft, c_bone, c_soft = [], [], [], []
    for seed in (3, 4, 5):
        t = make_phantom(seed, FAINT).truth
        for b, c, o in zip(t.background_std, t.contrasts, t.over_bone):
            (bone if o else soft).append(b)
            (c_bone if o else c_soft).append(c)
    assert len(bone) >= 10 and len(soft) >= 10
    assert np.median(bone) > 1.5 * np.median(soft)
    assert np.median(c_bone) > 1.5 * np.median(c_soft)


def test_without_a_floor_density_keeps_its_meaning():
    """min_lesion_cnr=0 leaves the drawn densities alone (stress tests with invisible lesions)."""
    ph = make_phantom(3, replace(FAINT, min_lesion_cnr=0.0))
    dens = [lesion.delta_mu_per_mm / (0.13 - 0.027) for lesion in ph.lesions]
    assert 0.02 <= min(dens) and max(dens) <= 0.1


def test_new_followup_lesions_meet_the_floor():
    base = make_phantom(4, FAINT)
    fp = FollowupParams(change=ChangeMode.EVOLVE, area_factor=1.2, n_new=4, resolve_fraction=0.0)
    t = make_followup(base, 5, fp).truth
    assert t.new_ids
    for lesion_id in t.new_ids:
        assert t.cnr[t.lesion_ids.index(lesion_id)] >= FAINT.min_lesion_cnr


def test_background_estimate_matches_the_film_fluctuation():
    """The generator's background estimate agrees with the film's own band-passed spread."""
    ph = make_phantom(6, replace(SMALL, min_lesion_cnr=0.0, n_bones=0))
    t = ph.truth
    density = ph.film.pixels.astype(np.float64) * (5.7 / (2**SMALL.bits_stored - 1))
    ratios = []
    for k in range(1, t.n_lesions + 1):
        inside = t.labels == k
        r = max(float(ndimage.distance_transform_edt(inside).max()), 1.0)
        band = ndimage.gaussian_filter(density, r / 2) - ndimage.gaussian_filter(density, 2 * r)
        dist = ndimage.distance_transform_edt(~inside)
        ring = (dist >= r) & (dist <= 3 * r) & t.masks["body"] & (t.labels == 0)
        values = band[ring]
        spread = 1.4826 * np.median(np.abs(values - np.median(values)))
        ratios.append(spread / t.background_std[k - 1])
    assert 0.5 < float(np.median(ratios)) < 1.5


# ----------------------------------------------------------------------------- follow-ups


def test_retest_keeps_lesions_and_maps_centroids_onto_the_baseline(base, retest):
    t, b = retest.truth, base.truth
    assert t.magnification == 1.03
    assert t.lesion_ids == b.lesion_ids and t.kinds == b.kinds
    assert t.resolved_ids == () and t.new_ids == ()
    matrix = np.asarray(t.transform)
    assert matrix.shape == (2, 3)
    for k, lesion_id in enumerate(t.lesion_ids):
        j = b.lesion_ids.index(lesion_id)
        if b.areas_mm2[j] < 1.0:
            continue  # a few pixels: the centroid moves with pixelisation
        mapped = matrix @ np.array([*t.centroids[k], 1.0])
        assert np.hypot(*(mapped - np.array(b.centroids[j]))) < 0.5
    # Same lesions: area at baseline magnification within pixelisation of the baseline.
    assert abs(t.true_change_pct) < 3.0
    assert t.total_area_mm2 == pytest.approx(b.total_area_mm2 * 1.03**2, rel=0.03)


def test_true_change_is_computed_at_baseline_magnification(base):
    fu = make_followup(base, 21, FollowupParams(magnification=0.97, area_factor=1.3))
    t = fu.truth
    expected = (t.total_area_mm2 / 0.97**2 - base.truth.total_area_mm2) / base.truth.total_area_mm2 * 100
    assert t.true_change_pct == pytest.approx(expected, rel=1e-12)
    assert t.baseline_total_area_mm2 == base.truth.total_area_mm2


@pytest.mark.parametrize("factor", [0.4, 0.75, 1.4, 1.9])
def test_evolve_steers_total_area_towards_area_factor(base, factor):
    fu = make_followup(
        base, 30, FollowupParams(area_factor=factor, n_new=0, resolve_fraction=0.0, lesion_spread=0.3)
    )
    assert fu.truth.true_change_pct == pytest.approx((factor - 1.0) * 100.0, abs=12.0)


def test_evolve_reports_resolved_and_new_lesions(base):
    fu = make_followup(base, 31, FollowupParams(area_factor=1.2, resolve_fraction=0.4, n_new=3))
    t, b = fu.truth, base.truth
    assert set(t.resolved_ids) == set(b.lesion_ids) - set(t.lesion_ids)
    assert set(t.new_ids) == set(t.lesion_ids) - set(b.lesion_ids)
    assert t.resolved_ids and t.new_ids
    assert min(t.new_ids) > max(b.lesion_ids)
    assert all(t.kinds[t.lesion_ids.index(i)] is LesionKind.NODULE for i in t.new_ids)
    assert set(t.baseline_areas_mm2) == set(b.lesion_ids)


def test_lower_exposure_looks_denser_in_air(base):
    dark = make_followup(base, 40, FollowupParams(exposure=0.7, change=ChangeMode.RETEST))
    bright = make_followup(base, 40, FollowupParams(exposure=1.4, change=ChangeMode.RETEST))

    def air(ph):
        m = ph.truth.masks
        return float(np.median(ph.film.pixels[~m["body"] & ~m["collimation"] & ~m["marker"]]))

    # Density = -ln(exposure) shift: 0.7 vs 1.4 differ by ln 2 in density units.
    assert air(dark) > air(base) > air(bright)


def test_chained_followups_stay_relative_to_the_baseline(base):
    three = make_followup(base, 50, FollowupParams(area_factor=1.3, months=3))
    nine = make_followup(three, 51, FollowupParams(area_factor=1.3, months=9, rotation_deg=-3.0))
    assert nine.truth.baseline_total_area_mm2 == base.truth.total_area_mm2
    assert nine.truth.true_change_pct > three.truth.true_change_pct
    # Its transform maps onto the baseline, not onto the 3-month film.
    common = set(nine.truth.lesion_ids) & set(base.truth.lesion_ids)
    assert common
    assert nine.lesions[0].scale != base.lesions[0].scale or len(common) < base.truth.n_lesions


def test_followup_rotation_moves_the_limb(base, retest):
    """The body mask of a follow-up, mapped back with the true transform, overlaps the baseline's."""
    import cv2

    matrix = np.asarray(retest.truth.transform)
    # warpAffine with WARP_INVERSE_MAP samples the follow-up at follow-up <- baseline; we have
    # follow-up -> baseline, so invert it first.
    full = np.vstack([matrix, [0, 0, 1]])
    inv = np.linalg.inv(full)[:2]
    body_fu = retest.truth.masks["body"].astype(np.uint8)
    back = cv2.warpAffine(body_fu, inv[:, [1, 0, 2]][[1, 0]], base.film.shape[::-1], flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    field = ~base.truth.masks["collimation"]
    agree = _dice(back.astype(bool) & field, base.truth.masks["body"] & field)
    raw = _dice(body_fu.astype(bool) & field, base.truth.masks["body"] & field)
    assert agree > 0.97 and agree > raw


# ----------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rows": 10},
        {"spacing_mm": 0.0},
        {"bits_stored": 8},
        {"n_bones": 3},
        {"nodule_diameter_mm": (5.0, 2.0)},
        {"density": (0.0, 1.0)},
        {"marker_text": ""},
        {"marker_text": "l"},
        {"marker_text": "L?"},
        {"marker_text": "LEFT"},
        {"limb_width_mm": (60.0, 200.0)},
        {"monochrome1": 1},
        {"min_lesion_cnr": -1.0},
        {"min_lesion_cnr": 50.0},
    ],
)
def test_bad_phantom_params_are_rejected(kwargs):
    with pytest.raises(ParameterError):
        PhantomParams(**kwargs)


# ----------------------------------------------------------------------------- marker font


def test_marker_glyph_l_is_a_bar_and_a_foot():
    l1 = marker_glyphs("L", 1)
    assert l1.shape == (7, 5)
    expected = np.zeros((7, 5), bool)
    expected[:, 0] = True  # the upright
    expected[6, :] = True  # the foot
    np.testing.assert_array_equal(l1, expected)


@pytest.mark.parametrize("cell", [1, 3, 6])
def test_marker_glyphs_scale_by_whole_cells_with_one_cell_between_letters(cell):
    two = marker_glyphs("RL", cell)
    assert two.shape == (7 * cell, 11 * cell)
    assert not two[:, 5 * cell:6 * cell].any()  # the gap between the letters
    np.testing.assert_array_equal(two[::cell, 6 * cell::cell], marker_glyphs("L", 1))
    # R: an upright, a bowl closed at row 3 and a leg reaching the bottom-right dot.
    r1 = marker_glyphs("R", 1)
    assert r1[:, 0].all() and r1[3, :4].all() and r1[6, 4] and not r1[6, 1:4].any()
    assert int(two.sum()) == int(marker_glyphs("RL", 1).sum()) * cell * cell


def test_marker_glyphs_refuse_a_character_the_font_lacks():
    with pytest.raises(ParameterError, match="'a' is not in the marker font"):
        marker_glyphs("a", 2)
    with pytest.raises(ParameterError, match="cell_px=0"):
        marker_glyphs("L", 0)
    with pytest.raises(ParameterError, match="at least one character"):
        marker_glyphs("", 2)


def test_the_rendered_marker_is_the_font_raster_seven_cells_tall(base):
    # The truth's marker mask is the lead letter: exactly the font's raster, 7 cells tall.
    letter = base.truth.masks["marker"]
    rows, cols = np.nonzero(letter)
    box = letter[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    cell = round(9.0 / 7.0 / SMALL.spacing_mm)  # 6 px of 0.2 mm
    assert cell == 6
    np.testing.assert_array_equal(box, marker_glyphs(SMALL.marker_text, cell))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rotation_deg": 30.0},
        {"translation_mm": (50.0, 0.0)},
        {"magnification": 1.5},
        {"exposure": 0.0},
        {"change": "grow"},
        {"area_factor": -1.0},
        {"n_new": -1},
    ],
)
def test_bad_followup_params_are_rejected(kwargs):
    with pytest.raises(ParameterError):
        FollowupParams(**kwargs)


def test_change_accepts_its_string_value():
    assert FollowupParams(change="retest").change is ChangeMode.RETEST


def test_negative_seed_is_rejected():
    with pytest.raises(ParameterError):
        make_phantom(-1, SMALL)


def test_no_bones_and_one_bone_render():
    for n in (0, 1):
        ph = make_phantom(8, PhantomParams(**{**SMALL.__dict__, "n_bones": n}))
        assert ph.anatomy.n_bones == n
        assert ph.truth.masks["bone"].any() == (n > 0)
        assert math.isfinite(float(ph.film.pixels.mean()))


# ----------------------------------------------------------------------------- CLI and files


def test_cli_phantom_writes_films_and_truth(tmp_path):
    import json

    from typer.testing import CliRunner

    import calcimage
    from calcimage.cli.app import app
    from calcimage.phantom import read_truth_labels

    out = tmp_path / "films"
    args = ["phantom", "--out", str(out), "--seed", "4", "--pairs", "2", "--months", "3",
            "--rows", "500", "--cols", "450", "--spacing", "0.25", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert len(listed) == 4 and {r["patient_id"] for r in listed} == {"SYN4-0", "SYN4-1"}
    films = sorted(out.glob("*.dcm"))
    assert len(films) == 4
    for row in listed:
        film = calcimage.load(row["film"])
        truth = json.loads(Path(row["truth"]).read_text(encoding="utf-8"))
        labels = read_truth_labels(out / truth["labels"])
        assert labels.shape == film.shape == (500, 450)
        assert int(labels.max()) == truth["lesion_count"] == row["lesion_count"]
        assert film.metadata.patient_id == row["patient_id"]
        assert film.metadata.study_date.isoformat() == row["study_date"]
        assert all(lesion["cnr"] >= 5.0 for lesion in truth["lesions"] if lesion["lesion_id"] in truth["new_ids"] or truth["months"] == 0)
    # Same seed, same bytes.
    again = tmp_path / "again"
    assert CliRunner().invoke(app, [*args[:2], str(again), *args[3:]]).exit_code == 0
    assert all((again / f.name).read_bytes() == f.read_bytes() for f in out.iterdir())


def test_cli_phantom_png_format(tmp_path):
    from typer.testing import CliRunner

    import calcimage
    from calcimage.cli.app import app

    result = CliRunner().invoke(
        app, ["phantom", "--out", str(tmp_path), "--format", "png", "--rows", "400", "--cols", "400", "--spacing", "0.3"]
    )
    assert result.exit_code == 0, result.output
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == 2
    film = calcimage.load(pngs[0])
    assert film.spacing_mm == (0.3, 0.3) and film.metadata.patient_id == "SYN0-0"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "tiff"], "--format"),
        (["--months", "9,3"], "--months"),
        (["--months", "x"], "--months"),
        (["--rows", "500", "--cols", "300", "--spacing", "0.2"], "limb_width_mm"),
        (["--min-cnr", "-1"], "min_lesion_cnr"),
    ],
)
def test_cli_phantom_bad_options_exit_2_with_one_line(tmp_path, args, message):
    from typer.testing import CliRunner

    from calcimage.cli.app import app

    result = CliRunner().invoke(app, ["phantom", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_truth_files_round_trip(tmp_path, base):
    import json

    from calcimage.phantom import read_truth_labels, write_truth

    paths = write_truth(base, tmp_path / "film", film_file="film.dcm")
    assert [p.name for p in paths] == ["film.truth.pgm.gz", "film.truth.json"]
    labels = read_truth_labels(paths[0])
    assert labels.dtype == np.int32 and np.array_equal(labels, base.truth.labels)
    info = json.loads(paths[1].read_text(encoding="utf-8"))
    assert info["film"] == "film.dcm" and info["seed"] == 11
    assert info["lesion_count"] == base.truth.n_lesions
    assert [entry["lesion_id"] for entry in info["lesions"]] == list(base.truth.lesion_ids)
    assert [entry["kind"] for entry in info["lesions"]] == [k.value for k in base.truth.kinds]
    assert info["phantom_params"]["spacing_mm"] == 0.2


def test_followups_within_clinical_ranges_show_every_lesion_whole():
    from calcimage.phantom import SAMPLE_FILM_PARAMS, random_followup_params

    for seed in range(3):
        base = make_phantom(seed, SAMPLE_FILM_PARAMS)
        assert base.truth.truncated_ids == ()
        fp = random_followup_params(np.random.Generator(np.random.PCG64(seed)), months=3, area_factor=1.2)
        assert abs(fp.rotation_deg) <= 6 and max(map(abs, fp.translation_mm)) <= 10
        assert make_followup(base, seed + 100, fp).truth.truncated_ids == ()


def test_lesions_cut_by_the_field_are_reported_as_truncated():
    base = make_phantom(5, SMALL)
    shifted = make_followup(
        base, 6, FollowupParams(rotation_deg=10.0, translation_mm=(20.0, 0.0), magnification=1.1,
                                change=ChangeMode.RETEST),
    )
    t = shifted.truth
    assert t.truncated_ids, "a 20 mm shift on a 120 mm film should cut a lesion"
    assert set(t.truncated_ids) <= set(base.truth.lesion_ids)
    assert t.resolved_ids == ()  # out of view is not resolved
    assert set(t.lesion_ids) | set(t.truncated_ids) == set(base.truth.lesion_ids)
    for lesion_id in t.truncated_ids:
        if lesion_id in t.lesion_ids:  # partly visible: its footprint ends at the field's edge
            k = t.lesion_ids.index(lesion_id)
            mask = t.labels == k + 1
            edge = np.zeros_like(mask)
            edge[[0, -1], :] = edge[:, [0, -1]] = True
            at_field = ndimage.binary_dilation(mask) & (t.masks["collimation"] | edge)
            assert at_field.any()
            assert t.areas_mm2[k] / 1.1**2 < 1.03 * t.baseline_areas_mm2[lesion_id]


def test_unsharp_processing_raises_local_contrast_but_not_the_truth(base):
    processed = make_phantom(11, PhantomParams(**{**SMALL.__dict__, "unsharp_amount": 1.5}))
    assert np.array_equal(processed.truth.labels, base.truth.labels)
    assert not np.array_equal(processed.film.pixels, base.film.pixels)
    t = base.truth
    k = int(np.argmax(t.contrasts)) + 1
    inside = t.labels == k
    ring = ndimage.binary_dilation(inside, iterations=10) & ~ndimage.binary_dilation(inside, iterations=4)
    ring &= t.labels == 0

    def contrast(ph):
        return float(ph.film.pixels[inside].mean() - ph.film.pixels[ring].mean())

    assert contrast(processed) > 1.2 * contrast(base) > 0


def _sphere(radius_mm: float, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Footprint and projected thickness (peak 1) of a sphere on a pixel grid."""
    n = int(math.ceil(radius_mm / spacing_mm)) + 2
    rr, cc = np.mgrid[-n:n + 1, -n:n + 1] * spacing_mm
    frac = 1.0 - (rr**2 + cc**2) / radius_mm**2
    return frac > 0, np.sqrt(np.clip(frac, 0.0, None))


@pytest.mark.parametrize("spacing", [0.1, 0.2])
def test_lesion_signal_is_the_band_passed_share_of_the_peak(spacing):
    from calcimage.phantom import _lesion_signal

    def params(sp: float, blur: float = 0.0) -> PhantomParams:
        # Same field in mm (the limb must fit); only spacing and blur matter here.
        return replace(SMALL, spacing_mm=sp, rows=int(120 / sp), cols=int(110 / sp), blur_mm=blur)

    p = params(spacing)
    inside, thick = _sphere(2.0, spacing)
    s1 = _lesion_signal(p, inside, 0.1 * thick)
    # Linear in density (up to the rounding to 4 significant digits).
    assert _lesion_signal(p, inside, 0.3 * thick) == pytest.approx(3 * s1, rel=1e-3)
    # A sphere keeps about half its peak through the band-pass (its mean over the disc is
    # 2/3 of the peak, less the surround), the same at both spacings (scales are in px of r).
    assert 0.45 < s1 / 0.1 < 0.65
    p2 = params(0.3 - spacing)
    inside2, thick2 = _sphere(2.0, 0.3 - spacing)
    assert _lesion_signal(p2, inside2, 0.1 * thick2) == pytest.approx(s1, rel=0.05)
    # Detector blur lowers it.
    assert _lesion_signal(params(spacing, 0.5), inside, 0.1 * thick) < s1


def test_truth_cnr_is_signal_over_background():
    t = make_phantom(3, FAINT).truth
    assert len(t.signals) == t.n_lesions > 0
    assert t.cnr == tuple(s / b for s, b in zip(t.signals, t.background_std))
    ratios = np.array(t.signals) / np.array(t.contrasts)
    assert np.all((ratios > 0.3) & (ratios < 0.8))  # the band-passed share of the peak
    assert all(d["signal"] == s for d, s in zip(t.to_dict()["lesions"], t.signals))
