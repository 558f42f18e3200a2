"""Fuzzing ``calcimage.load`` with hypothesis (issue 9 item 2).

A small valid DICOM film is written with pydicom, split into its top-level elements, and
hypothesis then replaces element values with hostile bytes, deletes elements, mutates the
pixel bytes and overwrites random bytes anywhere in the file. ``load`` must return a valid
Film or raise CalcimageError: never another exception, never a hang.

Bounded for CI (FUZZ_EXAMPLES examples, default 150). A longer campaign::

    CALCIMAGE_FUZZ_EXAMPLES=20000 .venv/bin/pytest -q tests/test_fuzz_load.py -p no:cacheprovider

(see docs/reliability.md).
"""

from __future__ import annotations

import io
import os
import signal
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid

from calcimage import CalcimageError, Film, load
from calcimage.errors import CalcimageWarning

FUZZ_EXAMPLES = int(os.environ.get("CALCIMAGE_FUZZ_EXAMPLES", "150"))
#: Seconds one load may take before it counts as a hang.
HANG_SECONDS = 10

ROWS, COLS = 32, 32
_SYNTAXES = {"rle": RLELossless, "j2k": JPEG2000Lossless, "jpegls": JPEGLSLossless}
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def _base_film(*, lut_sequence: bool, mono1: bool, signed: bool, bits: int, syntax: str = "native") -> bytes:
    """A valid explicit-VR-little-endian film with every element the loader reads."""
    ds = Dataset()
    ds.PatientID = "FUZZ01"
    ds.StudyDate = "20260131"
    ds.Modality = "DX"
    ds.ImageLaterality = "L"
    ds.ViewPosition = "PA"
    ds.BodyPartExamined = "HAND"
    ds.SOPClassUID = pydicom.uid.DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Rows, ds.Columns = ROWS, COLS
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if mono1 else "MONOCHROME2"
    ds.PresentationLUTShape = "INVERSE" if mono1 else "IDENTITY"
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelSpacing = [0.1, 0.2]
    ds.ImagerPixelSpacing = [0.12, 0.24]
    ds.EstimatedRadiographicMagnificationFactor = 1.2
    ds.WindowCenter = 100
    ds.WindowWidth = 200
    if lut_sequence:
        item = Dataset()
        item.LUTDescriptor = [16, -8 if signed else 0, 16]
        item.ModalityLUTType = "US"
        item.add_new(0x00283006, "US", [3 * k for k in range(16)])  # LUTData
        ds.ModalityLUTSequence = Sequence([item])
    else:
        ds.RescaleSlope = 2
        ds.RescaleIntercept = -5
    kind = ("i" if signed else "u") + str(ds.BitsAllocated // 8)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    pixels = np.linspace(lo, hi, ROWS * COLS).round().astype(kind).reshape(ROWS, COLS)
    ds.PixelData = pixels.astype("<" + kind).tobytes()
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    if syntax != "native":
        ds.compress(_SYNTAXES[syntax])
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _split(data: bytes) -> list[list[Any]]:
    """Top-level elements of an explicit-VR-LE file as [tag, vr, value, undefined_length]."""
    elements: list[list[Any]] = []
    pos = 132
    while pos < len(data):
        tag, vr = data[pos : pos + 4], data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack("<I", data[pos + 8 : pos + 12])
            start = pos + 12
        else:
            (length,) = struct.unpack("<H", data[pos + 6 : pos + 8])
            start = pos + 8
        if length == 0xFFFFFFFF:  # sequence or encapsulated pixel data: keep the items as one blob
            end = data.index(_SEQ_DELIMITER, start)
            elements.append([tag, vr, data[start:end], True])
            pos = end + len(_SEQ_DELIMITER)
        else:
            elements.append([tag, vr, data[start : start + length], False])
            pos = start + length
    return elements


def _join(elements: list[list[Any]]) -> bytes:
    out = [b"\0" * 128, b"DICM"]
    meta = [e for e in elements if e[0][:2] == b"\x02\x00" and e[0] != b"\x02\x00\x00\x00"]
    rest = [e for e in elements if e[0][:2] != b"\x02\x00"]

    def encode(tag: bytes, vr: bytes, value: bytes, undefined: bool) -> bytes:
        if undefined and vr in _LONG_VRS:
            return tag + vr + b"\0\0" + b"\xff\xff\xff\xff" + value + _SEQ_DELIMITER
        if vr in _LONG_VRS:
            return tag + vr + b"\0\0" + struct.pack("<I", len(value)) + value
        return tag + vr + struct.pack("<H", min(len(value), 0xFFFF)) + value[:0xFFFF]

    meta_bytes = b"".join(encode(*e) for e in meta)
    # Keep the group length honest so pydicom reads the meta it was given.
    out.append(encode(b"\x02\x00\x00\x00", b"UL", struct.pack("<I", len(meta_bytes)), False) + meta_bytes)
    out.extend(encode(*e) for e in rest)
    return b"".join(out)


_HOSTILE_TEXT = [
    b"", b" ", b"0", b"-1", b"0\\0", b"1e308", b"-1e308", b"NaN", b"inf", b"-0", b"1e-320",
    b"65536", b"4294967296", b"99999999999999999999", b"1.5", b"\\\\\\", b"abc", b"\x00\x00",
    b"MONOCHROME1", b"MONOCHROME2", b"RGB", b"PALETTE COLOR", b"YBR_FULL", b"INVERSE",
    b"1.2.840.10008.1.2.4.50\x00", b"1.2.840.10008.1.2.4.90\x00", b"1.2.840.10008.1.2.5\x00",
    b"1.2.840.10008.1.2\x00", b"1.2.840.10008.1.2.2\x00", b"1.2.3\x00", b"0.1\\0.1\\0.1",
    b"20261399", b"\xff\xfe\xfd", b"\xc3\x28",
]
_values = st.one_of(
    st.sampled_from(_HOSTILE_TEXT),
    st.binary(max_size=12),
    st.integers(0, 0xFFFF).map(lambda v: struct.pack("<H", v)),
    st.integers(0, 0xFFFF).map(lambda v: struct.pack("<HH", v, v)),
    st.integers(-(2**31), 2**31 - 1).map(lambda v: struct.pack("<i", v)),
)
_element_edit = st.tuples(
    st.integers(0, 10_000),  # which element (modulo the count)
    st.sampled_from(["replace", "delete", "swap_vr"]),
    _values,
)
_pixel_edit = st.one_of(
    st.none(),
    st.tuples(st.just("truncate"), st.integers(0, 2 * ROWS * COLS)),
    st.tuples(st.just("extend"), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8)),
)
_raw_edit = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3)


class _Hang(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Hang(f"load took more than {HANG_SECONDS} s")


def _mutate(elements: list[list[Any]], edits: list[tuple[int, str, bytes]], pixel_edit: object) -> None:
    for index, action, value in edits:
        if not elements:
            break
        k = index % len(elements)
        if action == "delete":
            del elements[k]
        elif action == "swap_vr":
            elements[k][1] = value[:2].ljust(2, b"X") if value[:2] else b"UN"
        else:
            elements[k][2] = value
    pixel = next((e for e in elements if e[0] == b"\xe0\x7f\x10\x00"), None)
    if pixel is None or pixel_edit is None:
        return
    kind, arg = pixel_edit  # type: ignore[misc]
    if kind == "truncate":
        pixel[2] = pixel[2][: int(arg)]
    elif kind == "extend":
        pixel[2] = pixel[2] + arg
    else:
        buf = bytearray(pixel[2])
        for at, byte in arg:
            if buf:
                buf[at % len(buf)] = byte
        pixel[2] = bytes(buf)


def _check(path: Path) -> None:
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_SECONDS)
    try:
        with warnings.catch_warnings():
            # Loading with a CalcimageWarning is an allowed outcome; any other warning escaping
            # load would be a bug (pytest turns it into an error).
            warnings.simplefilter("ignore", CalcimageWarning)
            film = load(path)
    except CalcimageError as exc:
        message = str(exc)
        assert "\n" not in message and message, f"error message must be one non-empty line: {message!r}"
        return
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert isinstance(film, Film)
    assert film.pixels.ndim == 2 and film.pixels.dtype == np.float32
    assert film.pixels.size >= 1
    assert np.all(np.isfinite(film.pixels))
    if film.spacing_mm is None:
        assert film.spacing_source.value == "none"
    else:
        assert all(np.isfinite(v) and v > 0 for v in film.spacing_mm)


_BASES = {
    (seq, mono1, signed, bits, "native"): _base_film(lut_sequence=seq, mono1=mono1, signed=signed, bits=bits)
    for seq in (False, True)
    for mono1 in (False, True)
    for signed in (False, True)
    for bits in (8, 12)
}
# Compressed films put the decoders (RLE, OpenJPEG, CharLS) in front of the mutations too.
_BASES.update({
    (False, mono1, False, 12, syntax): _base_film(lut_sequence=False, mono1=mono1, signed=False, bits=12, syntax=syntax)
    for mono1 in (False, True)
    for syntax in _SYNTAXES
})


@pytest.mark.parametrize("key", sorted(_BASES))
def test_base_films_load(tmp_path: Path, key: tuple[bool, bool, bool, int, str]) -> None:
    """The unmutated films load: the fuzzer starts from valid input."""
    path = tmp_path / "base.dcm"
    path.write_bytes(_BASES[key])
    film = load(path)
    assert film.shape == (ROWS, COLS)
    assert film.spacing_mm == (0.1, 0.2)
    assert film.metadata.modality_lut == ("sequence" if key[0] else "rescale")
    assert film.metadata.inverted is key[1]
    assert _join(_split(_BASES[key])) == _BASES[key]  # the splitter round-trips


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=5000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=os.environ.get("CALCIMAGE_FUZZ_RANDOM") is None,
)
@given(
    base=st.sampled_from(sorted(_BASES)),
    edits=st.lists(_element_edit, min_size=0, max_size=4),
    pixel_edit=_pixel_edit,
    raw_edit=_raw_edit,
)
def test_load_survives_mutated_dicom(
    tmp_path: Path,
    base: tuple[bool, bool, bool, int, str],
    edits: list[tuple[int, str, bytes]],
    pixel_edit: object,
    raw_edit: list[tuple[int, int]],
) -> None:
    elements = _split(_BASES[base])
    _mutate(elements, edits, pixel_edit)
    data = bytearray(_join(elements))
    for at, byte in raw_edit:
        data[132 + at % (len(data) - 132)] = byte
    path = tmp_path / "fuzz.dcm"
    path.write_bytes(bytes(data))
    _check(path)


def _image_bases() -> dict[str, bytes]:
    import cv2

    grey16 = ((np.arange(ROWS * COLS).reshape(ROWS, COLS) * 2113) % 65536).astype(np.uint16)
    grey8 = (grey16 >> 8).astype(np.uint8)
    out = {}
    for suffix, img in ((".png", grey16), (".tif", grey16), (".jpg", grey8), (".png", np.dstack([grey8] * 3))):
        ok, encoded = cv2.imencode(suffix, img)
        assert ok
        out[f"{suffix}-{img.dtype}-{img.ndim}"] = encoded.tobytes()
    return out


_IMAGE_BASES = _image_bases()


@settings(
    max_examples=max(20, FUZZ_EXAMPLES // 3),
    deadline=5000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=os.environ.get("CALCIMAGE_FUZZ_RANDOM") is None,
)
@given(
    base=st.sampled_from(sorted(_IMAGE_BASES)),
    raw_edit=st.lists(st.tuples(st.integers(0, 100_000), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.one_of(st.none(), st.integers(1, 100_000)),
)
def test_load_survives_mutated_image(
    tmp_path: Path, base: str, raw_edit: list[tuple[int, int]], cut: int | None
) -> None:
    """PNG / TIFF / JPEG bytes overwritten (headers included) or cut: same contract."""
    data = bytearray(_IMAGE_BASES[base])
    for at, byte in raw_edit:
        data[at % len(data)] = byte
    if cut is not None:
        data = data[: max(1, cut % len(data))]
    path = tmp_path / ("fuzz" + base.split("-")[0])
    path.write_bytes(bytes(data))
    _check(path)
