"""Unit tests for calcimage.regions."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from calcimage.errors import ParameterError
from calcimage.film import Film, SpacingSource
from calcimage.regions import OTHER, assign_lesions, grid_regions, load_regions, whole_film


def _film(shape=(40, 60), spacing=(0.5, 0.5)) -> Film:
    src = SpacingSource.USER if spacing else SpacingSource.NONE
    return Film(np.zeros(shape, np.float32), spacing, src)


def test_whole_film_default() -> None:
    for spec in (None, "", "film", "all"):
        reg = load_regions(spec, _film())
        assert reg.names == ("film",) and reg.mask.min() == 1 and not reg.excluded.any()


def test_whole_film_takes_no_memory_and_assigns_everything() -> None:
    reg = whole_film(_film((300, 400)))
    # one value broadcast over the film: no full-size arrays for the common case
    assert reg.mask.strides == (0, 0) and reg.excluded.strides == (0, 0)
    assert reg.mask.shape == reg.excluded.shape == (300, 400)
    assert reg.covers_film and reg.describe() == {"source": "film", "names": ["film"], "excluded_px": 0}
    labels = np.zeros((300, 400), np.int32)
    labels[10:20, 10:20] = 1
    labels[200:220, 300:330] = 2
    assert assign_lesions(labels, reg) == ["film", "film"]


@pytest.mark.parametrize("spec", ["grid 2x3", "grid:2x3", "GRID 2X3"])
def test_grid(spec: str) -> None:
    reg = load_regions(spec.lower() if spec.startswith("GRID") else spec, _film())
    assert reg.names == ("r1c1", "r1c2", "r1c3", "r2c1", "r2c2", "r2c3")
    assert reg.mask[0, 0] == 1 and reg.mask[0, 59] == 3 and reg.mask[39, 0] == 4
    assert np.bincount(reg.mask.ravel())[1:].tolist() == [400] * 6
    assert reg.covers_film


def test_grid_errors() -> None:
    with pytest.raises(ParameterError):
        grid_regions(_film(), 0, 2)
    with pytest.raises(ParameterError, match="neither a file"):
        load_regions("grid two", _film())


@pytest.mark.parametrize("units,scale", [("px", 1.0), ("mm", 0.5)])
def test_polygons_and_exclude(tmp_path: Path, units: str, scale: float) -> None:
    spec = {"units": units, "regions": [
        {"name": "left", "polygon": [[0, 0], [0, 29 * scale], [39 * scale, 29 * scale], [39 * scale, 0]]},
        {"name": "ring", "polygon": [[10 * scale, 40 * scale], [10 * scale, 50 * scale],
                                     [20 * scale, 50 * scale], [20 * scale, 40 * scale]], "exclude": True},
    ]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(spec))
    reg = load_regions(path, _film())
    assert reg.names == ("left",)
    assert reg.mask[:, :30].min() == 1 and reg.mask[:, 31:].max() == 0
    assert reg.excluded[10:21, 40:51].all() and reg.excluded.sum() == 11 * 11
    assert not reg.covers_film


def test_mm_polygons_need_spacing(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"units": "mm", "regions": [{"name": "a", "polygon": [[0, 0], [0, 5], [5, 5]]}]}))
    with pytest.raises(ParameterError, match="no pixel spacing"):
        load_regions(path, _film(spacing=None))


def test_label_mask_with_names(tmp_path: Path) -> None:
    mask = np.zeros((40, 60), np.uint8)
    mask[:, :20] = 1
    mask[:, 20:40] = 2
    mask[:, 40:] = 3
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    (tmp_path / "m.regions.json").write_text(json.dumps({"names": {"1": "thumb", "2": "palm"}, "exclude": [3]}))
    reg = load_regions(tmp_path / "m.png", _film())
    assert reg.names == ("thumb", "palm")
    assert reg.excluded[:, 40:].all() and not reg.excluded[:, :40].any()
    with pytest.raises(ParameterError, match="40x60"):
        load_regions(tmp_path / "m.png", _film(shape=(30, 60)))


def test_assign_by_largest_part_and_other() -> None:
    reg = grid_regions(_film(), 1, 2)  # r1c1 = cols 0-29, r1c2 = cols 30-59
    labels = np.zeros((40, 60), np.int32)
    labels[5:10, 25:40] = 1  # 5 cols left, 10 right -> r1c2
    labels[20:30, 20:33] = 2  # 10 left, 3 right -> r1c1
    assert assign_lesions(labels, reg) == ["r1c2", "r1c1"]
    part = reg.mask.copy()
    part[:, 40:] = 0
    from calcimage.regions import Regions
    reg2 = Regions(part, reg.names, reg.excluded, "test")
    labels[30:35, 41:50] = 3
    assert assign_lesions(labels, reg2)[2] == OTHER
    assert assign_lesions(np.zeros((40, 60), np.int32), reg2) == []
