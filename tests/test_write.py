"""DICOM and PNG writers: round trips through calcimage.load, metadata, determinism, errors."""

from __future__ import annotations

import datetime as dt
import json
import os

import numpy as np
import pydicom
import pytest

import calcimage
from calcimage.errors import OutputError, ParameterError
from calcimage.film import Film, FilmMetadata, SpacingSource
from calcimage.io.image import SIDECAR_KEYS
from calcimage.io.write import TransferSyntax, write_dicom, write_png
from calcimage.phantom import PhantomParams, make_phantom


def _film(bits: int = 12, spacing: tuple[float, float] = (0.15, 0.2), mono1: bool = False) -> Film:
    """A 40 x 50 film whose values cover 0 .. 2**bits - 1 exactly, both ends included."""
    top = 2**bits - 1
    values = np.linspace(0, top, 40 * 50).round().reshape(40, 50)
    values[0, 0], values[-1, -1] = 0, top
    meta = FilmMetadata(
        bits_stored=bits, photometric_interpretation="MONOCHROME1" if mono1 else "MONOCHROME2",
        patient_id="P07", study_date=dt.date(2026, 3, 4), laterality="R", view_position="AP",
        body_part="ARM",
    )
    return Film(pixels=values, spacing_mm=spacing, spacing_source=SpacingSource.PIXEL_SPACING, metadata=meta)


@pytest.mark.parametrize("mono1", [False, True])
@pytest.mark.parametrize(
    "tag", [SpacingSource.PIXEL_SPACING, SpacingSource.IMAGER, SpacingSource.IMAGER_ERMF]
)
def test_dicom_round_trip_gives_back_the_picture_and_spacing(tmp_path, mono1, tag):
    film = _film()
    path = tmp_path / "film.dcm"
    write_dicom(film, path, spacing_tag=tag, monochrome1=mono1, ermf=1.25)
    back = calcimage.load(path)
    assert np.array_equal(back.pixels, film.pixels)
    assert back.spacing_source is tag
    assert back.spacing_mm == pytest.approx((0.15, 0.2), rel=1e-12)
    assert back.metadata.photometric_interpretation == ("MONOCHROME1" if mono1 else "MONOCHROME2")
    assert back.metadata.inverted is mono1
    ds = pydicom.dcmread(path)
    if tag is SpacingSource.IMAGER_ERMF:
        assert [float(v) for v in ds.ImagerPixelSpacing] == pytest.approx([0.1875, 0.25])
        assert float(ds.EstimatedRadiographicMagnificationFactor) == 1.25
    assert ds.PresentationLUTShape == ("INVERSE" if mono1 else "IDENTITY")
    if mono1:  # stored inverted: the densest pixel is stored as 0
        assert int(ds.pixel_array[-1, -1]) == 0 and int(ds.pixel_array[0, 0]) == 4095


@pytest.mark.parametrize("syntax", list(TransferSyntax))
@pytest.mark.parametrize("bits", [10, 12, 16])
def test_every_transfer_syntax_is_lossless(tmp_path, syntax, bits):
    if syntax is TransferSyntax.JPEGLS_LOSSLESS:
        pytest.importorskip("jpeg_ls", reason="JPEG-LS needs the optional pyjpegls package")
    film = _film(bits=bits)
    path = tmp_path / f"{syntax.value}.dcm"
    write_dicom(film, path, transfer_syntax=syntax)
    back = calcimage.load(path)
    assert np.array_equal(back.pixels, film.pixels)
    assert back.metadata.transfer_syntax == syntax.uid
    assert back.metadata.bits_stored == bits


def test_jpeg2000_is_smaller_than_uncompressed_on_a_phantom(tmp_path):
    ph = make_phantom(2, PhantomParams(rows=400, cols=400, spacing_mm=0.3))
    raw, j2k = tmp_path / "raw.dcm", tmp_path / "j2k.dcm"
    write_dicom(ph.film, raw)
    write_dicom(ph.film, j2k, transfer_syntax="jpeg2000-lossless", monochrome1=True)
    assert j2k.stat().st_size < 0.8 * raw.stat().st_size
    assert np.array_equal(calcimage.load(j2k).pixels, ph.film.pixels)


def test_dicom_metadata_is_written_without_a_patient_name(tmp_path):
    path = tmp_path / "f.dcm"
    write_dicom(_film(), path)
    ds = pydicom.dcmread(path)
    assert ds.Modality == "DX"
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1"
    assert str(ds.PatientName) == ""
    assert (ds.PatientID, ds.StudyDate, ds.ImageLaterality, ds.ViewPosition, ds.BodyPartExamined) == (
        "P07", "20260304", "R", "AP", "ARM",
    )
    back = calcimage.load(path)
    m = back.metadata
    assert (m.patient_id, m.study_date, m.laterality, m.view_position, m.body_part, m.modality) == (
        "P07", dt.date(2026, 3, 4), "R", "AP", "ARM", "DX",
    )


def test_explicit_metadata_overrides_the_films(tmp_path):
    path = tmp_path / "f.dcm"
    write_dicom(_film(), path, patient_id="X9", study_date="2027-01-31", laterality="L", view_position="PA")
    m = calcimage.load(path).metadata
    assert (m.patient_id, m.study_date, m.laterality, m.view_position) == ("X9", dt.date(2027, 1, 31), "L", "PA")


def test_writing_the_same_film_twice_gives_identical_bytes(tmp_path):
    film = _film()
    for syntax in ("explicit", "jpeg2000-lossless", "deflated"):
        a, b = tmp_path / f"a_{syntax}.dcm", tmp_path / f"b_{syntax}.dcm"
        write_dicom(film, a, transfer_syntax=syntax)
        write_dicom(film, b, transfer_syntax=syntax)
        assert a.read_bytes() == b.read_bytes()
    write_png(film, tmp_path / "a.png")
    first = (tmp_path / "a.png").read_bytes(), (tmp_path / "a.json").read_bytes()
    write_png(film, tmp_path / "a.png")
    assert ((tmp_path / "a.png").read_bytes(), (tmp_path / "a.json").read_bytes()) == first


def test_uids_differ_between_films_and_are_valid(tmp_path):
    one, two = _film(), _film(bits=10)
    write_dicom(one, tmp_path / "1.dcm")
    write_dicom(two, tmp_path / "2.dcm")
    d1, d2 = pydicom.dcmread(tmp_path / "1.dcm"), pydicom.dcmread(tmp_path / "2.dcm")
    assert d1.SOPInstanceUID != d2.SOPInstanceUID
    assert d1.StudyInstanceUID == d2.StudyInstanceUID  # same patient and date
    for uid in (d1.SOPInstanceUID, d1.StudyInstanceUID, d1.SeriesInstanceUID):
        assert uid.is_valid


@pytest.mark.parametrize("mono1", [False, True])
def test_png_round_trip_with_sidecar(tmp_path, mono1):
    film = _film(bits=12)
    path = tmp_path / "film.png"
    write_png(film, path, monochrome1=mono1)
    sidecar = json.loads((tmp_path / "film.json").read_text())
    assert set(sidecar) <= set(SIDECAR_KEYS)
    assert sidecar["spacing_mm"] == [0.15, 0.2]
    assert sidecar["photometric_interpretation"] == ("MONOCHROME1" if mono1 else "MONOCHROME2")
    back = calcimage.load(path)
    assert np.array_equal(back.pixels, film.pixels)
    assert back.spacing_mm == (0.15, 0.2) and back.spacing_source is SpacingSource.SIDECAR
    m = back.metadata
    assert (m.patient_id, m.study_date, m.laterality, m.view_position, m.body_part) == (
        "P07", dt.date(2026, 3, 4), "R", "AP", "ARM",
    )


def test_png_of_a_phantom_round_trips(tmp_path):
    ph = make_phantom(1, PhantomParams(rows=300, cols=400, spacing_mm=0.3, monochrome1=True))
    write_png(ph.film, tmp_path / "p.png", patient_id="P1")
    back = calcimage.load(tmp_path / "p.png")
    assert back.metadata.inverted
    assert np.array_equal(back.pixels, ph.film.pixels)


def test_png_without_sidecar(tmp_path):
    write_png(_film(), tmp_path / "n.png", sidecar=False)
    assert not (tmp_path / "n.json").exists()
    assert calcimage.load(tmp_path / "n.png").spacing_mm is None


def test_values_outside_bits_stored_are_refused(tmp_path):
    film = Film(pixels=np.full((4, 4), 5000.0), spacing_mm=(0.1, 0.1), spacing_source=SpacingSource.USER)
    with pytest.raises(ParameterError, match="bits_stored"):
        write_dicom(film, tmp_path / "x.dcm", bits_stored=12)
    negative = Film(pixels=np.full((4, 4), -1.0), spacing_mm=(0.1, 0.1), spacing_source=SpacingSource.USER)
    with pytest.raises(ParameterError):
        write_png(negative, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs",
    [{"spacing_tag": "none"}, {"spacing_tag": "bogus"}, {"transfer_syntax": "jpeg-lossy"},
     {"spacing_tag": "ImagerPixelSpacing/ERMF", "ermf": 0.0}, {"bits_stored": 20}],
)
def test_bad_dicom_options_are_refused(tmp_path, kwargs):
    with pytest.raises(ParameterError):
        write_dicom(_film(), tmp_path / "x.dcm", **kwargs)


def test_film_without_spacing_cannot_be_written_as_dicom(tmp_path):
    film = Film(pixels=np.zeros((4, 4)), spacing_mm=None, spacing_source=SpacingSource.NONE)
    with pytest.raises(ParameterError, match="spacing"):
        write_dicom(film, tmp_path / "x.dcm")


def test_png_needs_a_png_name(tmp_path):
    with pytest.raises(ParameterError, match=".png"):
        write_png(_film(), tmp_path / "x.tif")


def test_missing_folder_is_an_output_error_and_nothing_is_left_behind(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        write_dicom(_film(), tmp_path / "nope" / "x.dcm")
    write_dicom(_film(), tmp_path / "ok.dcm")
    assert sorted(os.listdir(tmp_path)) == ["ok.dcm"]  # no temporary files remain


def test_existing_file_is_replaced_atomically(tmp_path):
    path = tmp_path / "f.dcm"
    path.write_bytes(b"old")
    write_dicom(_film(), path)
    assert calcimage.load(path).shape == (40, 50)


def test_transfer_syntax_by_uid_and_a_phantom_as_input(tmp_path):
    from pydicom.uid import JPEG2000Lossless

    from calcimage.phantom import write_dicom as reexported

    ph = make_phantom(3, PhantomParams(rows=300, cols=400, spacing_mm=0.3))
    reexported(ph, tmp_path / "p.dcm", transfer_syntax=JPEG2000Lossless)
    back = calcimage.load(tmp_path / "p.dcm")
    assert back.metadata.transfer_syntax == JPEG2000Lossless
    assert np.array_equal(back.pixels, ph.film.pixels)
    assert TransferSyntax.parse("1.2.840.10008.1.2.1") is TransferSyntax.EXPLICIT_LITTLE
    with pytest.raises(ParameterError, match="cannot write"):
        write_dicom(np.zeros((4, 4)), tmp_path / "x.dcm")
