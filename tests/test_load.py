"""``calcimage.load`` on small films written by the tests (rules of issue 2, docs/loading.md)."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from calcimage import FilmReadError, ParameterError, SpacingSource, load
from calcimage.errors import CalcimageWarning

STORED_U12 = np.array([[0, 100, 2048], [4000, 4095, 7]], dtype=np.uint16)


def make_dataset(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    lut: tuple[list[int], list[int]] | None = None,
    **elements: Any,
) -> Dataset:
    """A minimal single-frame DX data set holding ``pixels`` (native little endian)."""
    ds = Dataset()
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.PatientID = "P01"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    if lut is not None:
        item = Dataset()
        item.LUTDescriptor = lut[0]
        item.ModalityLUTType = "US"
        item.add_new(0x00283006, "US", lut[1])  # LUTData
        ds.ModalityLUTSequence = Sequence([item])
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta
    return ds


def write_dicom(path: Path, pixels: np.ndarray, **kwargs: Any) -> Path:
    """Write a film made by :func:`make_dataset` as a standard DICOM file."""
    pydicom.dcmwrite(path, make_dataset(pixels, **kwargs), enforce_file_format=True)
    return path


# ---------------------------------------------------------------- spacing


@pytest.mark.parametrize(
    ("elements", "spacing", "source"),
    [
        ({"PixelSpacing": [0.1, 0.2], "ImagerPixelSpacing": [0.3, 0.3]}, (0.1, 0.2), SpacingSource.PIXEL_SPACING),
        ({"PixelSpacing": [0.143, 0.143]}, (0.143, 0.143), SpacingSource.PIXEL_SPACING),
        (
            {"ImagerPixelSpacing": [0.15, 0.3], "EstimatedRadiographicMagnificationFactor": 1.5},
            (0.15 / 1.5, 0.3 / 1.5),
            SpacingSource.IMAGER_ERMF,
        ),
        # 0\0 PixelSpacing counts as absent: the next rule applies.
        (
            {"PixelSpacing": [0, 0], "ImagerPixelSpacing": [0.2, 0.2], "EstimatedRadiographicMagnificationFactor": 2.0},
            (0.1, 0.1),
            SpacingSource.IMAGER_ERMF,
        ),
        ({"PixelSpacing": [0, 0], "ImagerPixelSpacing": [0.2, 0.25]}, (0.2, 0.25), SpacingSource.IMAGER),
        ({"ImagerPixelSpacing": [0.4, 0.4]}, (0.4, 0.4), SpacingSource.IMAGER),
        # An ERMF of 0 is meaningless: the detector-plane spacing is used as it is.
        ({"ImagerPixelSpacing": [0.4, 0.4], "EstimatedRadiographicMagnificationFactor": 0}, (0.4, 0.4), SpacingSource.IMAGER),
        ({}, None, SpacingSource.NONE),
        ({"PixelSpacing": [0, 0]}, None, SpacingSource.NONE),
        # Implausible values (1 km pixels) count as absent too.
        ({"PixelSpacing": [1e6, 1e6]}, None, SpacingSource.NONE),
    ],
)
def test_dicom_spacing_rules(
    tmp_path: Path, elements: dict[str, Any], spacing: tuple[float, float] | None, source: SpacingSource
) -> None:
    film = load(write_dicom(tmp_path / "f.dcm", STORED_U12, bits_stored=12, **elements))
    assert film.spacing_source is source
    if spacing is None:
        assert film.spacing_mm is None
        assert film.pixel_area_mm2 is None
    else:
        assert film.spacing_mm == pytest.approx(spacing, rel=1e-12)


@pytest.mark.parametrize(("given", "expected"), [(0.05, (0.05, 0.05)), ((0.1, 0.2), (0.1, 0.2)), ([0.3, 0.4], (0.3, 0.4)), (np.float64(0.2), (0.2, 0.2))])
@pytest.mark.parametrize("elements", [{"PixelSpacing": [0.1, 0.1]}, {"ImagerPixelSpacing": [0.2, 0.2]}, {}])
def test_user_spacing_overrides_and_is_recorded(
    tmp_path: Path, given: Any, expected: tuple[float, float], elements: dict[str, Any]
) -> None:
    film = load(write_dicom(tmp_path / "f.dcm", STORED_U12, **elements), spacing_mm=given)
    assert film.spacing_mm == expected
    assert film.spacing_source is SpacingSource.USER


@pytest.mark.parametrize("bad", [0, -0.1, math.nan, math.inf, (0.1,), (0.1, 0.2, 0.3), (0.1, 0.0), "abc", True, (0.1, "x")])
def test_spacing_argument_validation(tmp_path: Path, bad: Any) -> None:
    path = write_dicom(tmp_path / "f.dcm", STORED_U12)
    with pytest.raises(ParameterError, match=r"spacing_mm=.* is invalid"):
        load(path, spacing_mm=bad)


# ---------------------------------------------------------------- photometric


@pytest.mark.parametrize(
    ("pixels", "bits"),
    [
        (np.array([[0, 7, 200], [255, 1, 128]], dtype=np.uint8), 8),
        (STORED_U12, 12),
        (np.array([[0, 65535, 1000], [256, 40000, 3]], dtype=np.uint16), 16),
    ],
)
@pytest.mark.parametrize(
    ("photometric", "shape", "inverted"),
    [
        ("MONOCHROME2", None, False),
        ("MONOCHROME2", "IDENTITY", False),
        ("MONOCHROME1", None, True),
        # INVERSE describes the MONOCHROME1 inversion itself: inverted once, not twice.
        ("MONOCHROME1", "INVERSE", True),
        ("MONOCHROME1", "IDENTITY", True),
    ],
)
def test_photometric_inverts_exactly_once(
    tmp_path: Path, pixels: np.ndarray, bits: int, photometric: str, shape: str | None, inverted: bool
) -> None:
    extra = {"PresentationLUTShape": shape} if shape else {}
    film = load(write_dicom(tmp_path / "f.dcm", pixels, photometric=photometric, bits_stored=bits, **extra))
    top = 2**bits - 1
    expected = (top - pixels.astype(np.float64)) if inverted else pixels.astype(np.float64)
    np.testing.assert_array_equal(film.pixels, expected.astype(np.float32))
    assert film.pixels.dtype == np.float32
    assert film.metadata.inverted is inverted
    assert film.metadata.photometric_interpretation == photometric
    assert film.metadata.presentation_lut_shape == shape
    assert film.metadata.value_range == (0.0, float(top))
    assert film.metadata.bits_stored == bits


def test_monochrome2_with_inverse_is_not_inverted_and_warns(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "f.dcm", STORED_U12, bits_stored=12, PresentationLUTShape="INVERSE")
    with pytest.warns(CalcimageWarning, match="MONOCHROME2 film has PresentationLUTShape INVERSE"):
        film = load(path)
    np.testing.assert_array_equal(film.pixels, STORED_U12.astype(np.float32))
    assert film.metadata.inverted is False
    assert any("INVERSE" in note for note in film.metadata.notes)


# ---------------------------------------------------------------- modality LUT


@pytest.mark.parametrize(("slope", "intercept"), [(0.5, -100.0), (2.0, 0.0), (1.0, 1024.0), (0.684, 200.0)])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_rescale_is_applied_then_inverted(tmp_path: Path, slope: float, intercept: float, photometric: str) -> None:
    path = write_dicom(
        tmp_path / "f.dcm", STORED_U12, bits_stored=12, photometric=photometric,
        RescaleSlope=slope, RescaleIntercept=intercept,
    )
    film = load(path)
    rescaled = STORED_U12 * slope + intercept
    lo, hi = intercept, 4095 * slope + intercept
    expected = (hi + lo) - rescaled if photometric == "MONOCHROME1" else rescaled
    np.testing.assert_allclose(film.pixels, expected.astype(np.float32), rtol=0, atol=1e-3)
    assert film.metadata.modality_lut == "rescale"
    assert film.metadata.value_range == pytest.approx((lo, hi))


def test_modality_lut_sequence_is_applied(tmp_path: Path) -> None:
    # LUT of 4 entries starting at stored value 10; values outside map to the end entries.
    stored = np.array([[10, 11, 12], [13, 9, 14]], dtype=np.uint16)
    path = write_dicom(tmp_path / "f.dcm", stored, bits_stored=12, lut=([4, 10, 16], [100, 200, 300, 400]))
    film = load(path)
    np.testing.assert_array_equal(film.pixels, np.array([[100, 200, 300], [400, 100, 400]], dtype=np.float32))
    assert film.metadata.modality_lut == "sequence"
    assert film.metadata.value_range == (100.0, 400.0)


def test_modality_lut_sequence_wins_over_rescale_and_inverts_over_lut_range(tmp_path: Path) -> None:
    stored = np.array([[10, 11, 12], [13, 9, 14]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "f.dcm", stored, bits_stored=12, photometric="MONOCHROME1",
        lut=([4, 10, 16], [100, 200, 300, 400]), RescaleSlope=5, RescaleIntercept=7,
    )
    film = load(path)
    # LUT output in 100..400, MONOCHROME1 inverted within that range: v -> 500 - v.
    np.testing.assert_array_equal(film.pixels, np.array([[400, 300, 200], [100, 400, 100]], dtype=np.float32))
    assert film.metadata.modality_lut == "sequence"


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_signed_pixels(tmp_path: Path, photometric: str) -> None:
    stored = np.array([[-2048, -1, 0], [1, 2047, -500]], dtype=np.int16)
    film = load(write_dicom(tmp_path / "f.dcm", stored, bits_stored=12, photometric=photometric))
    expected = (-1 - stored.astype(np.float64)) if photometric == "MONOCHROME1" else stored.astype(np.float64)
    np.testing.assert_array_equal(film.pixels, expected.astype(np.float32))
    assert film.metadata.value_range == (-2048.0, 2047.0)


def test_signed_pixels_with_rescale(tmp_path: Path) -> None:
    stored = np.array([[-1000, 0], [24, 3000]], dtype=np.int16)
    film = load(write_dicom(tmp_path / "f.dcm", stored, bits_stored=16, RescaleSlope=1, RescaleIntercept=-1024))
    np.testing.assert_array_equal(film.pixels, np.array([[-2024, -1024], [-1000, 1976]], dtype=np.float32))


# ---------------------------------------------------------------- VOI, metadata


def test_voi_windows_and_lut_recorded_not_applied(tmp_path: Path) -> None:
    voi = Dataset()
    voi.LUTDescriptor = [4, 0, 8]
    voi.add_new(0x00283006, "US", [255, 0, 0, 255])
    path = write_dicom(
        tmp_path / "f.dcm", STORED_U12, bits_stored=12,
        WindowCenter=[1000, 2000], WindowWidth=[500, 4000], VOILUTFunction="SIGMOID",
        VOILUTSequence=Sequence([voi]),
    )
    film = load(path)
    np.testing.assert_array_equal(film.pixels, STORED_U12.astype(np.float32))
    assert film.metadata.voi_windows == ((1000.0, 500.0), (2000.0, 4000.0))
    assert film.metadata.voi_lut_function == "SIGMOID"
    assert film.metadata.voi_lut_sequence is True


def test_metadata_and_identity(tmp_path: Path) -> None:
    path = write_dicom(
        tmp_path / "f.dcm", STORED_U12, bits_stored=12, PatientName="Doe^Jane", PatientID="ID-7",
        StudyDate="20260131", ImageLaterality="R", ViewPosition="PA", BodyPartExamined="HAND",
    )
    film = load(path)
    ds = pydicom.dcmread(path)
    meta = film.metadata
    assert (meta.patient_id, meta.laterality, meta.view_position, meta.body_part, meta.modality) == (
        "ID-7", "R", "PA", "HAND", "DX"
    )
    assert meta.study_date is not None and meta.study_date.isoformat() == "2026-01-31"
    assert meta.sop_instance_uid == ds.SOPInstanceUID
    assert meta.series_instance_uid == ds.SeriesInstanceUID
    assert meta.study_instance_uid == ds.StudyInstanceUID
    assert meta.sop_class_uid == DigitalXRayImageStorageForPresentation
    assert meta.transfer_syntax == ExplicitVRLittleEndian
    assert meta.source_format == "dicom"
    assert "Doe" not in repr(meta)  # the patient's name is never kept
    assert film.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert film.path == path
    assert film.pixels.flags.writeable is False


@pytest.mark.parametrize("as_type", [str, Path, os.fsencode])
def test_path_types(tmp_path: Path, as_type: Any) -> None:
    path = write_dicom(tmp_path / "f.dcm", STORED_U12, bits_stored=12)
    film = load(as_type(path))
    assert film.path == path
    assert film.shape == (2, 3)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEGLSLossless])
def test_compressed_syntaxes_decode_exactly(tmp_path: Path, syntax: pydicom.uid.UID) -> None:
    stored = ((np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 37) % 4096).astype(np.uint16)
    ds = make_dataset(stored, bits_stored=12, PixelSpacing=[0.1, 0.1])
    ds.compress(syntax)
    path = tmp_path / "c.dcm"
    ds.save_as(path, enforce_file_format=True)
    film = load(path)
    np.testing.assert_array_equal(film.pixels, stored.astype(np.float32))
    assert film.metadata.transfer_syntax == syntax


def test_file_without_meta_warns_and_loads(tmp_path: Path) -> None:
    ds = make_dataset(STORED_U12, bits_stored=12, PixelSpacing=[0.2, 0.2])
    del ds.file_meta
    path = tmp_path / "nometa.dcm"
    pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True)  # no preamble, no file meta
    assert path.read_bytes()[128:132] != b"DICM"
    with pytest.warns(CalcimageWarning, match="no DICOM preamble/file meta"):
        film = load(path)
    np.testing.assert_array_equal(film.pixels, STORED_U12.astype(np.float32))
    assert film.spacing_mm == (0.2, 0.2)
    assert film.metadata.notes and "Implicit VR Little Endian" in film.metadata.notes[0]


# ---------------------------------------------------------------- refused DICOMs


def test_multi_frame_refused(tmp_path: Path) -> None:
    frames = np.stack([STORED_U12, STORED_U12])
    ds = make_dataset(STORED_U12, bits_stored=12, NumberOfFrames=2)
    ds.PixelData = frames.astype("<u2").tobytes()
    path = tmp_path / "multi.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(FilmReadError, match=r"multi\.dcm: multi-frame DICOM \(2 frames\) is not supported"):
        load(path)


def test_no_pixel_data_refused(tmp_path: Path) -> None:
    ds = make_dataset(STORED_U12)
    del ds.PixelData
    path = tmp_path / "sr.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(FilmReadError, match=r"sr\.dcm: DICOM object has no pixel data .*not an image"):
        load(path)


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL"])
def test_colour_dicom_refused(tmp_path: Path, photometric: str) -> None:
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    ds = make_dataset(rgb[:, :, 0], photometric=photometric, SamplesPerPixel=3, PlanarConfiguration=0)
    ds.PixelData = rgb.tobytes()
    path = tmp_path / "colour.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(FilmReadError, match=rf"colour\.dcm: colour DICOM \({photometric}, 3 samples per pixel\) is refused"):
        load(path)


def test_palette_colour_single_sample_refused(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "pal.dcm", STORED_U12, photometric="PALETTE COLOR")
    with pytest.raises(FilmReadError, match=r"colour DICOM \(PALETTE COLOR, 1 samples per pixel\)"):
        load(path)


# ---------------------------------------------------------------- PNG / TIFF / JPEG

VALUES_U8 = np.array([[0, 1, 127], [128, 254, 255]], dtype=np.uint8)
VALUES_U16 = np.array([[0, 255, 256], [1000, 40000, 65535]], dtype=np.uint16)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff"])
@pytest.mark.parametrize("values", [VALUES_U8, VALUES_U16], ids=["u8", "u16"])
def test_lossless_images_keep_values_exactly(tmp_path: Path, suffix: str, values: np.ndarray) -> None:
    path = tmp_path / f"film{suffix}"
    assert cv2.imwrite(str(path), values)
    film = load(path)
    np.testing.assert_array_equal(film.pixels, values.astype(np.float32))  # 16 stays 16: 40000 kept
    assert film.spacing_mm is None and film.spacing_source is SpacingSource.NONE
    assert film.metadata.source_format == ("png" if suffix == ".png" else "tiff")
    assert film.metadata.bits_stored == values.dtype.itemsize * 8
    top = float(np.iinfo(values.dtype).max)
    assert film.metadata.value_range == (0.0, top)


def test_jpeg_loads(tmp_path: Path) -> None:
    values = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (16, 1))
    path = tmp_path / "film.jpg"
    assert cv2.imwrite(str(path), values, [cv2.IMWRITE_JPEG_QUALITY, 100])
    film = load(path, spacing_mm=0.1)
    assert film.shape == (16, 64)
    assert film.metadata.source_format == "jpeg"
    assert np.abs(film.pixels - values).max() <= 2  # lossy, but close at quality 100
    assert film.spacing_source is SpacingSource.USER


@pytest.mark.parametrize(
    ("bgr", "grey"),
    [((0, 0, 255), 76), ((0, 255, 0), 150), ((255, 0, 0), 29), ((10, 20, 200), 73)],
)
def test_colour_png_becomes_grey_with_warning(tmp_path: Path, bgr: tuple[int, int, int], grey: int) -> None:
    img = np.zeros((2, 2, 3), dtype=np.uint8)
    img[0, 0] = bgr
    path = tmp_path / "colour.png"
    cv2.imwrite(str(path), img)
    with pytest.warns(CalcimageWarning, match="colour image converted to grey"):
        film = load(path)
    np.testing.assert_array_equal(film.pixels, np.array([[grey, 0], [0, 0]], dtype=np.float32))


def test_grey_stored_as_rgb_needs_no_warning(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    cv2.imwrite(str(path), np.dstack([VALUES_U8] * 3))
    film = load(path)  # filterwarnings=error: any warning would fail this test
    np.testing.assert_array_equal(film.pixels, VALUES_U8.astype(np.float32))


@pytest.mark.parametrize("values", [VALUES_U8, VALUES_U16], ids=["u8", "u16"])
def test_alpha_channel_dropped_with_warning(tmp_path: Path, values: np.ndarray) -> None:
    alpha = np.full_like(values, np.iinfo(values.dtype).max)
    path = tmp_path / "alpha.png"
    cv2.imwrite(str(path), np.dstack([values, values, values, alpha]))
    with pytest.warns(CalcimageWarning, match="alpha channel ignored"):
        film = load(path)
    np.testing.assert_array_equal(film.pixels, values.astype(np.float32))


def _sidecar(image: Path, content: Any) -> Path:
    side = image.with_suffix(".json")
    side.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return side


@pytest.mark.parametrize("values", [VALUES_U8, VALUES_U16], ids=["u8", "u16"])
def test_sidecar_spacing_and_metadata(tmp_path: Path, values: np.ndarray) -> None:
    path = tmp_path / "hand.png"
    cv2.imwrite(str(path), values)
    _sidecar(path, {
        "spacing_mm": [0.1, 0.2], "patient_id": "P01", "study_date": "2026-01-31", "laterality": "L",
        "view_position": "PA", "body_part": "HAND", "photometric_interpretation": "MONOCHROME1",
    })
    film = load(path)
    assert film.spacing_mm == (0.1, 0.2)
    assert film.spacing_source is SpacingSource.SIDECAR
    meta = film.metadata
    assert (meta.patient_id, meta.laterality, meta.view_position, meta.body_part) == ("P01", "L", "PA", "HAND")
    assert meta.study_date is not None and meta.study_date.isoformat() == "2026-01-31"
    top = np.iinfo(values.dtype).max
    np.testing.assert_array_equal(film.pixels, (top - values.astype(np.float64)).astype(np.float32))
    assert meta.inverted is True
    # The argument still wins over the sidecar.
    assert load(path, spacing_mm=0.5).spacing_mm == (0.5, 0.5)
    assert load(path, spacing_mm=0.5).spacing_source is SpacingSource.USER


def test_sidecar_single_spacing_number(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), VALUES_U8)
    _sidecar(path, {"spacing_mm": 0.25})
    assert load(path).spacing_mm == (0.25, 0.25)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"spacing": [0.1, 0.1]}, r"unknown sidecar key 'spacing'; valid keys are spacing_mm"),
        ({"spacing_mm": [0, 0.1]}, r"spacing_mm=\[0, 0\.1\] is invalid"),
        ({"spacing_mm": [-0.1, 0.1]}, r"spacing_mm=.* is invalid"),
        ({"spacing_mm": [0.1]}, r"spacing_mm=\[0\.1\] is invalid"),
        ({"spacing_mm": "0.1"}, r"spacing_mm='0\.1' is invalid"),
        ({"spacing_mm": True}, r"spacing_mm=True is invalid"),
        ({"spacing_mm": [0.1, None]}, r"spacing_mm=.* is invalid"),
        ('{"spacing_mm": [NaN, 0.1]}', r"spacing_mm=\[nan, 0\.1\] is invalid"),
        ({"photometric_interpretation": "RGB"}, r"photometric_interpretation='RGB' is invalid"),
        ({"study_date": "31/01/2026"}, r"study_date='31/01/2026' is not a date"),
        ({"patient_id": ["a"]}, r"patient_id=\['a'\] is invalid"),
        ([0.1, 0.1], r"sidecar must hold a JSON object, got list"),
        ("{not json", r"sidecar is not valid JSON"),
    ],
)
def test_bad_sidecar(tmp_path: Path, content: Any, message: str) -> None:
    path = tmp_path / "hand.png"
    cv2.imwrite(str(path), VALUES_U8)
    _sidecar(path, content)
    with pytest.raises(FilmReadError, match=r"hand\.json: " + message) as info:
        load(path)
    assert "\n" not in str(info.value)


def test_user_spacing_recorded_for_images(tmp_path: Path) -> None:
    path = tmp_path / "a.tif"
    cv2.imwrite(str(path), VALUES_U16)
    film = load(path, spacing_mm=(0.15, 0.16))
    assert film.spacing_mm == (0.15, 0.16)
    assert film.spacing_source is SpacingSource.USER


def test_dicom_content_with_image_name_warns(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "film.png", STORED_U12, bits_stored=12)
    with pytest.warns(CalcimageWarning, match="content is DICOM but its name says PNG"):
        film = load(path)
    np.testing.assert_array_equal(film.pixels, STORED_U12.astype(np.float32))


def test_load_never_modifies_the_input(tmp_path: Path) -> None:
    """Loading never modifies the input file."""
    path = write_dicom(tmp_path / "f.dcm", STORED_U12, bits_stored=12, photometric="MONOCHROME1")
    before = path.read_bytes()
    copy.deepcopy(load(path).metadata)
    assert path.read_bytes() == before
    assert load(path).sha256 == hashlib.sha256(before).hexdigest()


@pytest.mark.parametrize(("elements", "slope", "intercept"), [({"RescaleSlope": 2}, 2.0, 0.0), ({"RescaleIntercept": -50}, 1.0, -50.0)])
def test_lone_rescale_element_uses_default_for_the_other(
    tmp_path: Path, elements: dict[str, Any], slope: float, intercept: float
) -> None:
    film = load(write_dicom(tmp_path / "f.dcm", STORED_U12, bits_stored=12, **elements))
    np.testing.assert_array_equal(film.pixels, (STORED_U12 * slope + intercept).astype(np.float32))
    assert film.metadata.value_range == (intercept, 4095 * slope + intercept)


def test_float_pixel_data_refused(tmp_path: Path) -> None:
    ds = make_dataset(STORED_U12)
    del ds.PixelData
    ds.BitsAllocated = 32
    ds.FloatPixelData = np.zeros(6, dtype="<f4").tobytes()
    path = tmp_path / "float.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(FilmReadError, match=r"float\.dcm: float pixel data \(parametric map\) is not supported"):
        load(path)
