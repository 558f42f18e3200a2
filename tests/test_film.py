"""Tests of the Film value and the error hierarchy."""

from __future__ import annotations

import numpy as np
import pytest

from calcimage.errors import CalcimageError, FilmReadError, OutputError, ParameterError, RegistrationError
from calcimage.film import Film, SpacingSource


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float64])
def test_film_pixels_are_read_only_float32(dtype: type) -> None:
    src = np.arange(12, dtype=dtype).reshape(3, 4)
    film = Film(pixels=src, spacing_mm=(0.1, 0.2), spacing_source=SpacingSource.USER)
    assert film.pixels.dtype == np.float32
    assert not film.pixels.flags.writeable
    assert film.shape == (3, 4)
    assert film.pixel_area_mm2 == pytest.approx(0.02)
    assert film.mean_spacing_mm == pytest.approx(np.sqrt(0.02))
    np.testing.assert_array_equal(film.pixels, src.astype(np.float32))


def test_film_does_not_freeze_the_callers_array() -> None:
    src = np.zeros((2, 2), np.float32)
    Film(pixels=src, spacing_mm=None, spacing_source=SpacingSource.NONE)
    src[0, 0] = 1.0  # the caller's array stays writeable
    assert src[0, 0] == 1.0


@pytest.mark.parametrize("spacing", [(0.0, 0.1), (-0.1, 0.1), (float("nan"), 0.1)])
def test_film_rejects_bad_spacing(spacing: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="spacing_mm"):
        Film(pixels=np.zeros((2, 2)), spacing_mm=spacing, spacing_source=SpacingSource.USER)


def test_film_without_spacing() -> None:
    film = Film(pixels=np.zeros((2, 2)), spacing_mm=None, spacing_source=SpacingSource.NONE)
    assert film.pixel_area_mm2 is None and film.mean_spacing_mm is None
    with pytest.raises(ValueError, match="needs a spacing_mm"):
        Film(pixels=np.zeros((2, 2)), spacing_mm=None, spacing_source=SpacingSource.PIXEL_SPACING)


def test_film_must_be_2d() -> None:
    with pytest.raises(ValueError, match="2-D"):
        Film(pixels=np.zeros((2, 2, 3)), spacing_mm=None, spacing_source=SpacingSource.NONE)


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [(FilmReadError, OSError), (ParameterError, ValueError), (RegistrationError, RuntimeError), (OutputError, OSError)],
)
def test_errors_inherit_base_and_builtin(cls: type, builtin: type) -> None:
    err = cls("bad\n  thing")
    assert isinstance(err, CalcimageError) and isinstance(err, builtin)
    assert str(err) == "bad thing"  # always one line
