"""Tests of calcimage.params: mapping and TOML onto frozen *Params dataclasses."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

import pytest

from calcimage.errors import ParameterError
from calcimage.params import (
    Config,
    load_config,
    params_from_mapping,
    params_hash,
    params_to_dict,
    require_positive,
    require_range,
)


class Colour(str, enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class ToyParams:
    size_mm: float = 1.0
    count: int = 3
    colour: Colour = Colour.RED
    pair_mm: tuple[float, float] = (0.1, 0.2)
    levels: tuple[int, ...] = (1, 2)
    limit: float | None = None
    flag: bool = False

    def __post_init__(self) -> None:
        require_positive("size_mm", self.size_mm)


def test_mapping_converts_types() -> None:
    p = params_from_mapping(
        ToyParams,
        {"size_mm": 2, "colour": "blue", "pair_mm": [0.5, 0.25], "levels": [4, 5, 6], "limit": 3},
    )
    assert p == ToyParams(size_mm=2.0, colour=Colour.BLUE, pair_mm=(0.5, 0.25), levels=(4, 5, 6), limit=3.0)
    assert isinstance(p.size_mm, float)


def test_round_trip_through_dict() -> None:
    p = ToyParams(size_mm=4.5, colour=Colour.BLUE, limit=None)
    d = params_to_dict(p)
    assert d == {
        "size_mm": 4.5, "count": 3, "colour": "blue", "pair_mm": [0.1, 0.2], "levels": [1, 2],
        "limit": None, "flag": False,
    }
    assert params_from_mapping(ToyParams, d) == p


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"sise_mm": 1.0}, "unknown parameter toy.sise_mm"),
        ({"colour": "green"}, "expected one of 'red', 'blue'"),
        ({"count": 1.5}, "expected an integer"),
        ({"count": True}, "expected an integer"),
        ({"size_mm": "big"}, "expected a number"),
        ({"size_mm": -1.0}, "size_mm=-1.0"),
        ({"pair_mm": [1.0]}, "list of 2 values"),
        ({"flag": 1}, "expected true or false"),
    ],
)
def test_bad_values_name_the_key(data: dict, fragment: str) -> None:
    with pytest.raises(ParameterError, match=None) as info:
        params_from_mapping(ToyParams, data, section="toy")
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_validators() -> None:
    require_positive("x", 0.0, allow_zero=True)
    require_range("x", 0.5, 0.0, 1.0)
    for bad in (0.0, float("nan"), float("inf"), True):
        with pytest.raises(ParameterError):
            require_positive("x", bad)
    with pytest.raises(ParameterError, match=r"x=2\.0 is invalid: expected a number in \[0\.0, 1\.0\]"):
        require_range("x", 2.0, 0.0, 1.0)


def test_hash_is_stable_and_sensitive() -> None:
    assert params_hash(ToyParams()) == params_hash(ToyParams())
    assert params_hash(ToyParams()) != params_hash(ToyParams(count=4))
    assert len(params_hash(ToyParams())) == 16


def test_config_defaults_and_toml(tmp_path: Path) -> None:
    default = Config()
    assert set(default.to_dict()) == {"segment", "measure", "compare"}
    path = tmp_path / "c.toml"
    path.write_text('[segment]\nmin_area_mm2 = 2.5\n', encoding="utf-8")
    cfg = load_config(path)
    assert cfg.segment.min_area_mm2 == 2.5
    assert cfg.compare == default.compare


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[segmnet]\nx = 1\n", "unknown section [segmnet]"),
        ("[segment]\nnot_a_key = 1\n", "unknown parameter segment.not_a_key"),
        ("[segment\n", "not a valid TOML file"),
        ("segment = 3\n", "[segment] must be a table"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ParameterError) as info:
        load_config(path)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="cannot read config file"):
        load_config(tmp_path / "absent.toml")
