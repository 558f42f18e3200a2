"""``calcimage.load`` on the real DICOM films in ../shared/data/real (see MANIFEST.md there).

Each file loads with its documented outcome (docs/loading.md has the same table). Region
boxes for the "denser is brighter" checks were chosen by looking at previews of the loaded
films: (row0, row1, col0, col1) in full-resolution pixels.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from calcimage import Film, FilmReadError, SpacingSource, load
from calcimage.errors import CalcimageWarning

Box = tuple[int, int, int, int]

#: name -> (spacing_mm, source, inverted, modality LUT) for every film that loads.
LOADS: dict[str, tuple[tuple[float, float] | None, SpacingSource, bool, str]] = {
    "CR1_6154_16x16_MONO1_rescale.dcm": ((0.1, 0.1), SpacingSource.IMAGER, True, "rescale"),
    "966_fixed.dcm": ((0.16, 0.16), SpacingSource.PIXEL_SPACING, True, "rescale"),
    "JPEG2KLossless_1s_1f_u_16_16.dcm": ((0.4, 0.4), SpacingSource.IMAGER, False, "rescale"),
    "RG2_JPLL.dcm": ((0.2, 0.2), SpacingSource.PIXEL_SPACING, False, "none"),
    "RG3_J2KR.dcm": (None, SpacingSource.NONE, True, "none"),
    "CR-ModalitySequenceLUT.dcm": ((0.15, 0.15), SpacingSource.PIXEL_SPACING, True, "sequence"),
    "CR-MONO1-10-chest.nometa.dcm": (None, SpacingSource.NONE, True, "none"),
    # ImagerPixelSpacing with an EstimatedRadiographicMagnificationFactor of 1.
    "GH133.dcm": ((0.09409090909091, 0.09409090909091), SpacingSource.IMAGER_ERMF, False, "rescale"),
    "mlut_18.dcm": (None, SpacingSource.NONE, False, "sequence"),
    "vlut_04.dcm": (None, SpacingSource.NONE, False, "none"),
    "693_J2KI.dcm": ((0.478516, 0.478516), SpacingSource.PIXEL_SPACING, False, "rescale"),
}
#: name -> words the one-line error must contain.
FAILS: dict[str, tuple[str, ...]] = {
    "RG2_JPLY.dcm": ("cannot decode pixel data", "JPEG Extended"),
    "MR_truncated.dcm": ("pixel data is truncated", "8130 bytes"),
    "SC_rgb_small_odd.dcm": ("colour DICOM (RGB, 3 samples per pixel) is refused",),
}
WARNS = {"CR-MONO1-10-chest.nometa.dcm": "no DICOM preamble/file meta"}

#: name -> (dense box, sparse box, what they are): the dense one must be brighter.
DENSER: dict[str, list[tuple[Box, Box, str]]] = {
    "966_fixed.dcm": [
        ((1100, 1400, 950, 1050), (700, 1100, 350, 600), "mediastinum/spine vs right lung"),
    ],
    "RG3_J2KR.dcm": [
        ((330, 770, 810, 880), (330, 770, 640, 700), "tibia vs calf soft tissue"),
        ((330, 770, 640, 700), (440, 880, 490, 550), "soft tissue vs air beside the leg"),
    ],
    "CR-MONO1-10-chest.nometa.dcm": [
        ((250, 330, 200, 230), (120, 250, 60, 140), "spine/mediastinum vs right lung"),
    ],
}


@functools.lru_cache(maxsize=None)
def _loaded(path: Path) -> tuple[Film, tuple[str, ...]]:
    """Each film is decoded once per session (the large ones take seconds)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        film = load(path)
    return film, tuple(f"{w.category.__name__}: {w.message}" for w in caught)


def _load(path: Path) -> Film:
    film, caught = _loaded(path)
    if path.name in WARNS:
        assert len(caught) == 1 and caught[0].startswith("CalcimageWarning") and WARNS[path.name] in caught[0]
    else:
        assert caught == (), f"unexpected warnings: {caught}"
    return film


@functools.lru_cache(maxsize=None)
def _pydicom_modality_output(path: Path) -> np.ndarray:
    """Stored values through pydicom's own modality LUT, computed independently of calcimage."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
        if "TransferSyntaxUID" not in ds.file_meta:
            ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        return np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float64)


def test_every_real_file_has_a_documented_outcome(real_dir: Path) -> None:
    present = {p.name for p in real_dir.glob("*.dcm")}
    assert present == set(LOADS) | set(FAILS)


@pytest.mark.parametrize("name", sorted(LOADS))
def test_real_file_loads(real_dir: Path, name: str) -> None:
    spacing, source, inverted, modality_lut = LOADS[name]
    film = _load(real_dir / name)
    assert film.spacing_source is source
    if spacing is None:
        assert film.spacing_mm is None
    else:
        assert film.spacing_mm == pytest.approx(spacing, rel=1e-12)
    assert film.metadata.inverted is inverted
    assert film.metadata.modality_lut == modality_lut
    assert film.pixels.dtype == np.float32 and np.all(np.isfinite(film.pixels))

    # Pixels are exactly pydicom's modality-LUT output, inverted within the value range for
    # MONOCHROME1; VOI windows / VOI LUTs are never applied.
    modality = _pydicom_modality_output(real_dir / name)
    assert film.shape == modality.shape
    lo, hi = film.metadata.value_range
    expected = (lo + hi) - modality if inverted else modality
    np.testing.assert_allclose(film.pixels, expected.astype(np.float32), rtol=0, atol=1e-3)


def test_cr_rescale_values_exact(real_dir: Path) -> None:
    """CR1_6154: RescaleSlope 0.684, Intercept 200, BitsStored 12, MONOCHROME1."""
    path = real_dir / "CR1_6154_16x16_MONO1_rescale.dcm"
    film = _load(path)
    stored = pydicom.dcmread(path).pixel_array.astype(np.float64)
    assert (stored.min(), stored.max()) == (1994.0, 2802.0)
    lo, hi = 200.0, 4095 * 0.684 + 200.0  # the whole 12-bit range through the rescale
    assert film.metadata.value_range == pytest.approx((lo, hi))
    np.testing.assert_allclose(film.pixels, (hi + lo - (stored * 0.684 + 200.0)).astype(np.float32), atol=1e-3)
    assert float(film.pixels.max()) == pytest.approx(hi + lo - (1994 * 0.684 + 200), abs=1e-3)  # 1637.084
    assert float(film.pixels.min()) == pytest.approx(hi + lo - (2802 * 0.684 + 200), abs=1e-3)  # 1084.412


def test_modality_lut_sequence_is_applied_not_rescale(real_dir: Path) -> None:
    """CR-ModalitySequenceLUT has both a LUT sequence and identity Rescale: the LUT wins."""
    path = real_dir / "CR-ModalitySequenceLUT.dcm"
    film = _load(path)
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array
    lut = np.frombuffer(ds.ModalityLUTSequence[0].LUTData, dtype="<u2")
    first = int(ds.ModalityLUTSequence[0].LUTDescriptor[1])
    mapped = lut[np.clip(stored.astype(np.int64) - first, 0, len(lut) - 1)].astype(np.float64)
    lo, hi = film.metadata.value_range
    np.testing.assert_array_equal(film.pixels, (lo + hi - mapped).astype(np.float32))
    # The LUT is not the identity, so applying only the rescale would give other values.
    assert not np.array_equal(mapped, stored)


def test_mlut_18_signed_lut(real_dir: Path) -> None:
    film = _load(real_dir / "mlut_18.dcm")
    ds = pydicom.dcmread(real_dir / "mlut_18.dcm")
    assert ds.PixelRepresentation == 1 and ds.BitsStored == 12
    assert film.metadata.value_range == (0.0, 65535.0)
    np.testing.assert_array_equal(film.pixels, np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float32))
    assert not np.array_equal(film.pixels, ds.pixel_array.astype(np.float32))


@pytest.mark.parametrize("name", ["vlut_04.dcm", "GH133.dcm"])
def test_voi_lut_recorded_not_applied(real_dir: Path, name: str) -> None:
    film = _load(real_dir / name)
    assert film.metadata.voi_lut_sequence is True
    np.testing.assert_array_equal(film.pixels, _pydicom_modality_output(real_dir / name).astype(np.float32))


def test_gh133_voi_settings_recorded(real_dir: Path) -> None:
    meta = _load(real_dir / "GH133.dcm").metadata
    assert meta.voi_lut_function == "SIGMOID"
    assert meta.voi_windows == ((2653.0, 900.0), (2713.0, 750.0), (2569.0, 1050.0))
    assert meta.modality == "MG"


def test_ct_signed_pixels(real_dir: Path) -> None:
    film = _load(real_dir / "693_J2KI.dcm")
    assert film.metadata.modality == "CT"
    # Signed 14-bit stored values through Intercept -1024.
    assert film.metadata.value_range == (-8192.0 - 1024.0, 8191.0 - 1024.0)
    assert float(film.pixels.min()) < -1000.0  # air in Hounsfield units


@pytest.mark.parametrize("name", sorted(DENSER))
def test_denser_is_brighter(real_dir: Path, name: str) -> None:
    film = _load(real_dir / name)
    for dense, sparse, what in DENSER[name]:
        r0, r1, c0, c1 = dense
        dense_mean = float(film.pixels[r0:r1, c0:c1].mean())
        r0, r1, c0, c1 = sparse
        sparse_mean = float(film.pixels[r0:r1, c0:c1].mean())
        # A clear margin: 5 % of the value range, far beyond noise.
        margin = 0.05 * (film.metadata.value_range[1] - film.metadata.value_range[0])
        assert dense_mean > sparse_mean + margin, f"{name}: {what}: {dense_mean:.1f} vs {sparse_mean:.1f}"


def test_nometa_file_warns_and_loads(real_dir: Path) -> None:
    with pytest.warns(CalcimageWarning, match="CR-MONO1-10-chest.nometa.dcm: no DICOM preamble/file meta") as rec:
        film = load(real_dir / "CR-MONO1-10-chest.nometa.dcm")
    assert len(rec) == 1
    assert film.shape == (440, 440)
    assert film.metadata.transfer_syntax == pydicom.uid.ImplicitVRLittleEndian
    assert film.metadata.notes


@pytest.mark.parametrize("name", sorted(FAILS))
def test_real_file_fails_cleanly(real_dir: Path, name: str) -> None:
    with pytest.raises(FilmReadError) as info:
        load(real_dir / name)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{real_dir / name}: ")
    for words in FAILS[name]:
        assert words in message
    assert len(message) < 400
