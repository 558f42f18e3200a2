"""Unit tests for calcimage.candidates: the tree model's evaluation and the component features."""

from __future__ import annotations

import json
from dataclasses import replace
import math
from pathlib import Path

import numpy as np
import pytest

from calcimage.candidates import (
    FEATURES, NO_BONE_MM, TreeModel, component_features, load_model, predict_proba,
)
from calcimage.errors import ParameterError
from calcimage.film import Film, SpacingSource
from calcimage.segment import SegmentParams, segment


def _stump(feature: int, threshold: float, low: float, high: float) -> dict:
    """One split: ``x[feature] <= threshold`` adds ``low``, otherwise ``high``."""
    return {"feature": [feature, 0, 0], "threshold": [threshold, 0.0, 0.0], "left": [1, 0, 0],
            "right": [2, 0, 0], "value": [0.0, low, high], "is_leaf": [False, True, True]}


def _model_dict(n_features: int = 2) -> dict:
    return {"features": [f"f{i}" for i in range(n_features)], "baseline": 0.5,
            "trees": [_stump(0, 1.0, -1.0, 2.0), _stump(1, 0.0, 0.25, -0.75)]}


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def test_predict_proba_of_two_stumps() -> None:
    model = TreeModel.from_dict(_model_dict())
    x = np.array([[0.5, -1.0], [1.0, 0.0], [3.0, 5.0]])
    # raw = 0.5 + tree 1 (x0 <= 1 -> -1, else 2) + tree 2 (x1 <= 0 -> 0.25, else -0.75)
    expected = [_sigmoid(0.5 - 1.0 + 0.25), _sigmoid(0.5 - 1.0 + 0.25), _sigmoid(0.5 + 2.0 - 0.75)]
    np.testing.assert_allclose(predict_proba(model, x), expected, rtol=0, atol=1e-15)


def test_predict_proba_of_a_deeper_tree_and_no_rows() -> None:
    # root: x0 <= 0 ? node 1 : node 2; node 1: x1 <= 5 ? leaf 3 (-2) : leaf 4 (1); node 2 leaf (3)
    tree = {"feature": [0, 1, 0, 0, 0], "threshold": [0.0, 5.0, 0.0, 0.0, 0.0],
            "left": [1, 3, 0, 0, 0], "right": [2, 4, 0, 0, 0], "value": [0, 0, 3.0, -2.0, 1.0],
            "is_leaf": [False, False, True, True, True]}
    model = TreeModel.from_dict({"features": ["a", "b"], "baseline": 0.0, "trees": [tree]})
    x = np.array([[-1.0, 4.0], [-1.0, 6.0], [0.5, 100.0]])
    np.testing.assert_allclose(predict_proba(model, x), [_sigmoid(-2.0), _sigmoid(1.0), _sigmoid(3.0)])
    assert predict_proba(model, np.zeros((0, 2))).shape == (0,)
    with pytest.raises(ValueError, match=r"expected \(n, 2\)"):
        predict_proba(model, np.zeros((3, 3)))


def test_model_round_trips_through_its_dict() -> None:
    model = TreeModel.from_dict(_model_dict())
    again = TreeModel.from_dict(json.loads(json.dumps(model.to_dict())))
    x = np.random.default_rng(0).normal(size=(20, 2))
    np.testing.assert_array_equal(predict_proba(model, x), predict_proba(again, x))


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("trees"),
    lambda d: d["trees"][0].update(left=[5, 0, 0]),     # child outside the tree
    lambda d: d["trees"][0].update(feature=[7, 0, 0]),  # feature the model does not have
    lambda d: d["trees"][1].update(value=[0.0]),        # arrays of different lengths
    lambda d: d["trees"].append({"feature": [0, 0], "threshold": [0.0, 0.0], "left": [1, 0],
                                 "right": [1, 0], "value": [0.0, 0.0],
                                 "is_leaf": [False, False]}),  # node 1 loops back to the root
])
def test_malformed_models_are_refused(mutate) -> None:
    data = _model_dict()
    mutate(data)
    with pytest.raises(ParameterError, match="model"):
        TreeModel.from_dict(data, "m.json")


def test_shipped_model_loads_and_files_are_checked(tmp_path: Path) -> None:
    model = load_model()
    assert model.features == FEATURES and len(model.feature) > 0
    assert "20000-20399" in model.description
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_model_dict()))
    with pytest.raises(ParameterError, match=r"other\.json: the model's features"):
        load_model(other)
    with pytest.raises(ParameterError, match=r"missing\.json: cannot read"):
        load_model(tmp_path / "missing.json")
    with pytest.raises(ParameterError, match="missing.json"):
        SegmentParams(score_model=str(tmp_path / "missing.json"))
    with pytest.raises(ParameterError, match="min_score"):
        SegmentParams(min_score=1.5)


@pytest.mark.parametrize("spacing", [0.1, 0.2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_features_of_a_square_on_flat_noise_sigma(spacing: float, dtype) -> None:
    rows, cols = 80, 60
    labels = np.zeros((rows, cols), np.int32)
    labels[20:30, 10:15] = 1  # 10 x 5 px
    flat = np.zeros((rows, cols), dtype)
    flat[20:30, 10:15] = 6.0
    sigma_c = np.full((40, 30), 2.0, np.float32)  # a working grid of half the size
    tissue_c = np.ones((40, 30), bool)
    x = component_features(labels, flat, sigma_c, np.zeros((40, 30), bool), tissue_c,
                           (spacing, spacing), None)
    f = dict(zip(FEATURES, x[0]))
    area = 50 * spacing * spacing
    assert f["log_area_mm2"] == pytest.approx(math.log(area))
    assert (f["z_max"], f["z_p90"], f["z_median"]) == pytest.approx((3.0, 3.0, 3.0))
    assert f["log_z_integrated"] == pytest.approx(math.log(3.0 * math.sqrt(area)))
    assert (f["bone_fraction"], f["outline_min_mm"], f["outline_mean_mm"]) == (0.0, NO_BONE_MM, NO_BONE_MM)
    # axes of a 10 x 5 rectangle: 4 sqrt((n^2 - 1) / 12 + 1 / 12) = 4 n / sqrt(12) per side
    assert f["elongation"] == pytest.approx(2.0)
    assert f["log_major_mm"] == pytest.approx(math.log(40 * spacing / math.sqrt(12)))
    assert f["solidity"] == pytest.approx(1.0)
    assert f["bone_axis_cos"] == 0.0
    # distance to the tissue's edge (here the image's edge) on the working grid, at the grid
    # pixel of every full-size pixel (rows 20..29 -> 10..14, cols 10..14 -> 5, 5, 6, 6, 7)
    ws = 2 * spacing
    expected_skin = np.mean([min(r // 2 + 1, 40 - r // 2, c // 2 + 1, 30 - c // 2)
                             for r in range(20, 30) for c in range(10, 15)])
    assert expected_skin == pytest.approx(6.8)
    assert f["skin_mm"] == pytest.approx(expected_skin * ws)


def test_features_see_bone_and_its_axis() -> None:
    labels = np.zeros((80, 80), np.int32)
    labels[30:32, 10:50] = 1  # a thin horizontal component
    labels[60:70, 70:72] = 2  # a thin vertical one
    flat = np.where(labels > 0, 4.0, 0.0).astype(np.float32)
    bone_c = np.zeros((40, 40), bool)
    bone_c[10:20, :] = True  # a horizontal band of bone, grid rows 10..19 = full rows 20..39
    x = component_features(labels, flat, np.ones((40, 40), np.float32), bone_c,
                           np.ones((40, 40), bool), (0.1, 0.1), 0.0)
    f1, f2 = dict(zip(FEATURES, x[0])), dict(zip(FEATURES, x[1]))
    assert f1["bone_fraction"] == 1.0 and f2["bone_fraction"] == 0.0
    assert f1["bone_axis_cos"] == pytest.approx(1.0) and f2["bone_axis_cos"] == pytest.approx(0.0, abs=1e-12)
    # component 1 lies on grid row 15, five grid pixels from the outline (0.2 mm each)
    assert f1["outline_min_mm"] == pytest.approx(1.0)
    # component 2 lies on grid rows 30..34: 11..15 pixels beyond the last bone row
    assert f2["outline_min_mm"] == pytest.approx(11 * 0.2)


def test_segment_records_scores_and_min_score_filters() -> None:
    rng = np.random.default_rng(3)
    img = 1000.0 + rng.normal(0, 4.0, (300, 300))
    rr, cc = np.mgrid[:300, :300]
    for r0, c0, amp in ((80, 80, 60.0), (200, 150, 40.0), (120, 230, 80.0)):
        img += amp * np.exp(-((rr - r0) ** 2 + (cc - c0) ** 2) / (2 * 6.0 ** 2))
    film = Film(img.astype(np.float32), (0.2, 0.2), SpacingSource.USER)
    # The candidate step alone (step 9, the pixel model, would add lesions it dropped).
    rules = SegmentParams(pixel_min_prob=0.0)
    everything = segment(film, replace(rules, min_score=0.0))
    assert everything.scores == () and everything.features.shape == (everything.n_lesions, len(FEATURES))
    scored = segment(film, rules)
    p = predict_proba(load_model(), everything.features)
    kept = p >= SegmentParams().min_score
    assert scored.n_lesions == int(kept.sum()) >= 3
    np.testing.assert_allclose(scored.scores, p[kept])
    np.testing.assert_array_equal(scored.features, everything.features[kept])
    # the kept labels are the same components, renumbered in raster order
    kept_ids = np.flatnonzero(kept) + 1
    np.testing.assert_array_equal(scored.labels > 0, np.isin(everything.labels, kept_ids))
    assert segment(film, replace(rules, min_score=1.0)).n_lesions == int((p >= 1.0).sum())
