"""Writing films: DX DICOM and 16-bit PNG with a JSON sidecar.

Both writers store ``film.pixels`` (brighter = denser) as whole numbers in
``[0, 2**bits_stored - 1]`` and invert them for MONOCHROME1, so that
:func:`calcimage.load` of the written file gives back the same picture. Files are written
to a temporary name beside the target and renamed into place.

Written DICOM files carry no patient name and deterministic UIDs derived from their content,
so writing the same film twice gives identical bytes.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import logging
import os
import secrets
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from calcimage.errors import OutputError, ParameterError
from calcimage.film import Film, SpacingSource

__all__ = ["TransferSyntax", "write_dicom", "write_png", "write_bytes_atomic"]

logger = logging.getLogger(__name__)

#: Digital X-Ray Image Storage - For Presentation.
DX_PRESENTATION_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"
#: Fixed implementation identity so the file meta (and hence the bytes) never depend on the
#: installed pydicom version.
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.43812345719871234"
IMPLEMENTATION_VERSION_NAME = "CALCIMAGE"


class TransferSyntax(str, enum.Enum):
    """Encodings :func:`write_dicom` can write (all lossless)."""

    EXPLICIT_LITTLE = "explicit"
    DEFLATED = "deflated"
    JPEG2000_LOSSLESS = "jpeg2000-lossless"
    JPEGLS_LOSSLESS = "jpegls-lossless"
    RLE_LOSSLESS = "rle"

    @property
    def uid(self) -> str:
        """The DICOM transfer syntax UID."""
        return _TS_UID[self]

    @classmethod
    def parse(cls, value: "TransferSyntax | str") -> "TransferSyntax":
        """The member named by ``value``: a member, its value (``"jpeg2000-lossless"``) or its UID."""
        if isinstance(value, cls):
            return value
        text = str(value).strip()
        for member in cls:
            if text in (member.value, _TS_UID[member]):
                return member
        choices = ", ".join(repr(t.value) for t in cls)
        raise ParameterError(
            f"parameter transfer_syntax={value!r} is invalid: expected one of {choices} or their UIDs"
        )


_TS_UID = {
    TransferSyntax.EXPLICIT_LITTLE: "1.2.840.10008.1.2.1",
    TransferSyntax.DEFLATED: "1.2.840.10008.1.2.1.99",
    TransferSyntax.JPEG2000_LOSSLESS: "1.2.840.10008.1.2.4.90",
    TransferSyntax.JPEGLS_LOSSLESS: "1.2.840.10008.1.2.4.80",
    TransferSyntax.RLE_LOSSLESS: "1.2.840.10008.1.2.5",
}

_SPACING_TAGS = (SpacingSource.PIXEL_SPACING, SpacingSource.IMAGER, SpacingSource.IMAGER_ERMF)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    Raises
    ------
    OutputError
        If the folder does not exist or cannot be written.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{path}: folder {folder} does not exist; create it first")
    tmp = folder / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        # os.open with 0o666 honours the umask, as a plain open() of the target would.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write to {folder}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise OutputError(f"{path}: cannot write file: {exc.strerror or exc}") from None


def _as_film(film: Any) -> Film:
    """The Film to write: ``film`` itself, or its ``.film`` (e.g. a phantom)."""
    if isinstance(film, Film):
        return film
    inner = getattr(film, "film", None)
    if isinstance(inner, Film):
        return inner
    raise ParameterError(f"cannot write a {type(film).__name__}: expected a calcimage.Film")


def _stored_values(film: Film, bits_stored: int, monochrome1: bool) -> np.ndarray:
    """Film pixels as uint16 stored values, inverted for MONOCHROME1."""
    top = 2**bits_stored - 1
    values = np.rint(np.asarray(film.pixels, dtype=np.float64))
    lo, hi = float(values.min()), float(values.max())
    if lo < 0 or hi > top:
        raise ParameterError(
            f"film values span [{lo:g}, {hi:g}], outside [0, {top}] of bits_stored={bits_stored}; "
            "pass a larger bits_stored or rescale the film first"
        )
    stored = values.astype(np.uint16)
    if monochrome1:
        stored = (top - stored).astype(np.uint16)
    return stored


def _bits(film: Film, bits_stored: int | None) -> int:
    bits = bits_stored if bits_stored is not None else (film.metadata.bits_stored or 16)
    if not (isinstance(bits, int) and not isinstance(bits, bool) and 8 <= bits <= 16):
        raise ParameterError(f"parameter bits_stored={bits!r} is invalid: expected an integer in [8, 16]")
    return bits


def _is_monochrome1(film: Film, monochrome1: bool | None) -> bool:
    if monochrome1 is not None:
        return bool(monochrome1)
    return (film.metadata.photometric_interpretation or "").upper() == "MONOCHROME1"


def _date(value: dt.date | str | None, fallback: dt.date | None) -> dt.date | None:
    if value is None:
        return fallback
    if isinstance(value, dt.date):
        return value
    text = str(value).strip().replace("-", "").replace(".", "")
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except (ValueError, IndexError):
        raise ParameterError(
            f"study_date={value!r} is invalid: give a date or 'YYYY-MM-DD'"
        ) from None


def _ds(value: float) -> str:
    """A DICOM DS string (at most 16 characters) for ``value``."""
    for digits in range(15, 5, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.6g}"


def write_dicom(
    film: Film | Any,
    path: str | os.PathLike[str],
    *,
    patient_id: str | None = None,
    study_date: dt.date | str | None = None,
    laterality: str | None = None,
    view_position: str | None = None,
    body_part: str | None = None,
    spacing_tag: SpacingSource | str = SpacingSource.PIXEL_SPACING,
    ermf: float = 1.1,
    transfer_syntax: TransferSyntax | str = TransferSyntax.EXPLICIT_LITTLE,
    monochrome1: bool | None = None,
    bits_stored: int | None = None,
    series_description: str = "calcimage phantom",
) -> None:
    """Write a film as a DX (for presentation) DICOM file.

    Parameters
    ----------
    film
        The film (or a :class:`calcimage.phantom.Phantom`, whose film is written); its pixels
        must be whole numbers in ``[0, 2**bits_stored - 1]`` after rounding (phantom films are).
    path
        Target file; written atomically.
    patient_id, study_date, laterality, view_position, body_part
        Default to the film's metadata; a missing value is written empty. No patient name is
        ever written.
    spacing_tag
        ``"PixelSpacing"``, ``"ImagerPixelSpacing"`` or ``"ImagerPixelSpacing/ERMF"``. With the
        ERMF form, ImagerPixelSpacing is ``spacing × ermf`` and the loader divides it back.
    ermf
        EstimatedRadiographicMagnificationFactor written with ``ImagerPixelSpacing/ERMF``.
    transfer_syntax
        Lossless encoding: ``explicit`` (default), ``deflated``, ``jpeg2000-lossless``,
        ``jpegls-lossless`` (needs pyjpegls) or ``rle``; the DICOM UID works too.
    monochrome1
        Store dark = dense (inverted); defaults to the film's photometric interpretation.
    bits_stored
        Defaults to the film's ``bits_stored`` (16 when unknown).
    series_description
        Free text for SeriesDescription.

    Raises
    ------
    ParameterError
        A bad option or pixel values that do not fit ``bits_stored``.
    OutputError
        The file cannot be written.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, generate_uid

    path = Path(path)
    film = _as_film(film)
    if film.spacing_mm is None:
        raise ParameterError(f"{path}: film has no pixel spacing; DICOM output needs one")
    try:
        tag = SpacingSource(spacing_tag)
    except ValueError:
        tag = None
    if tag not in _SPACING_TAGS:
        choices = ", ".join(repr(t.value) for t in _SPACING_TAGS)
        raise ParameterError(f"parameter spacing_tag={spacing_tag!r} is invalid: expected one of {choices}")
    syntax = TransferSyntax.parse(transfer_syntax)
    if tag is SpacingSource.IMAGER_ERMF and not (isinstance(ermf, (int, float)) and 0.5 <= ermf <= 3.0):
        raise ParameterError(f"parameter ermf={ermf!r} is invalid: expected a number in [0.5, 3.0]")
    bits = _bits(film, bits_stored)
    mono1 = _is_monochrome1(film, monochrome1)
    stored = _stored_values(film, bits, mono1)
    meta = film.metadata
    date = _date(study_date, meta.study_date)
    pid = patient_id if patient_id is not None else (meta.patient_id or "")
    side = laterality if laterality is not None else (meta.laterality or "")
    view = view_position if view_position is not None else (meta.view_position or "")
    part = body_part if body_part is not None else (meta.body_part or "")

    # UIDs from content, so the same film written twice gives the same bytes.
    digest = hashlib.sha256(stored.tobytes()).hexdigest()
    date_text = date.strftime("%Y%m%d") if date else ""
    study_uid = generate_uid(entropy_srcs=["calcimage-study", pid, date_text])
    series_uid = generate_uid(entropy_srcs=["calcimage-series", pid, date_text, side, view])
    sop_uid = generate_uid(entropy_srcs=["calcimage-sop", pid, date_text, side, view, digest, str(mono1)])

    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = UID(DX_PRESENTATION_SOP_CLASS)
    file_meta.MediaStorageSOPInstanceUID = sop_uid
    file_meta.TransferSyntaxUID = UID(TransferSyntax.EXPLICIT_LITTLE.uid)
    file_meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME

    ds = Dataset()
    ds.file_meta = file_meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.SOPClassUID = UID(DX_PRESENTATION_SOP_CLASS)
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = date_text
    ds.SeriesDate = date_text
    ds.ContentDate = date_text
    ds.StudyTime = "120000" if date_text else ""
    ds.ContentTime = "120000" if date_text else ""
    ds.AccessionNumber = ""
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "calcimage"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = series_description
    ds.PatientName = ""  # never a name
    ds.PatientID = pid
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.BodyPartExamined = part
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ImageLaterality = side
    ds.ViewPosition = view
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if mono1 else "MONOCHROME2"
    ds.Rows, ds.Columns = film.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LOG"
    # +1: lower stored values mean less X-ray intensity (denser) -- true of MONOCHROME1 storage.
    ds.PixelIntensityRelationshipSign = 1 if mono1 else -1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "INVERSE" if mono1 else "IDENTITY"
    lo, hi = np.percentile(stored, [1.0, 99.0])
    ds.WindowCenter = _ds(float(lo + hi) / 2.0)
    ds.WindowWidth = _ds(max(float(hi - lo), 1.0))
    row_mm, col_mm = film.spacing_mm
    if tag is SpacingSource.PIXEL_SPACING:
        ds.PixelSpacing = [_ds(row_mm), _ds(col_mm)]
    elif tag is SpacingSource.IMAGER:
        ds.ImagerPixelSpacing = [_ds(row_mm), _ds(col_mm)]
    else:
        ds.ImagerPixelSpacing = [_ds(row_mm * ermf), _ds(col_mm * ermf)]
        ds.EstimatedRadiographicMagnificationFactor = _ds(float(ermf))

    if syntax in (TransferSyntax.EXPLICIT_LITTLE, TransferSyntax.DEFLATED):
        ds.PixelData = stored.astype("<u2").tobytes()
        file_meta.TransferSyntaxUID = UID(syntax.uid)
    else:
        try:
            ds.compress(UID(syntax.uid), stored, generate_instance_uid=False)
        except Exception as exc:  # missing/failed encoder plugins raise many types
            raise OutputError(
                f"{path}: cannot encode pixel data as {syntax.value}: {' '.join(str(exc).split())[:200]}; "
                "install pylibjpeg-openjpeg (JPEG 2000) or pyjpegls (JPEG-LS), or use 'explicit'"
            ) from None

    import io

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's remarks on empty type-2 values
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    write_bytes_atomic(path, buffer.getvalue())
    logger.debug("wrote %s (%s, %s, %d bits)", path, syntax.value, ds.PhotometricInterpretation, bits)


def write_png(
    film: Film | Any,
    path: str | os.PathLike[str],
    *,
    patient_id: str | None = None,
    study_date: dt.date | str | None = None,
    laterality: str | None = None,
    view_position: str | None = None,
    body_part: str | None = None,
    monochrome1: bool | None = None,
    sidecar: bool = True,
) -> None:
    """Write a film as a 16-bit greyscale PNG with a sidecar ``NAME.json``.

    The sidecar holds ``spacing_mm`` and, when known, ``patient_id``, ``study_date``
    (YYYY-MM-DD), ``laterality``, ``view_position``, ``body_part`` and
    ``photometric_interpretation`` -- the keys :func:`calcimage.load` reads. Values default to
    the film's metadata.

    Parameters
    ----------
    film
        A Film (or a phantom); pixels must be whole numbers in [0, 65535] after rounding.
    path
        Target ``.png``; the sidecar is ``path`` with suffix ``.json``. Both written atomically.
    monochrome1
        Store dark = dense (values inverted within 0..65535); the sidecar says so.
    sidecar
        Write the sidecar (default True).

    Raises
    ------
    ParameterError
        Pixel values do not fit 16 bits, or the path does not end in ``.png``.
    OutputError
        A file cannot be written.
    """
    path = Path(path)
    film = _as_film(film)
    if path.suffix.lower() != ".png":
        raise ParameterError(f"{path}: PNG output needs a name ending in .png")
    mono1 = _is_monochrome1(film, monochrome1)
    stored = _stored_values(film, 16, mono1)
    ok, encoded = cv2.imencode(".png", stored, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise OutputError(f"{path}: PNG encoding failed")
    meta = film.metadata
    date = _date(study_date, meta.study_date)
    info: dict[str, Any] = {}
    if film.spacing_mm is not None:
        info["spacing_mm"] = [film.spacing_mm[0], film.spacing_mm[1]]
    fields = {
        "patient_id": patient_id if patient_id is not None else meta.patient_id,
        "study_date": date.isoformat() if date else None,
        "laterality": laterality if laterality is not None else meta.laterality,
        "view_position": view_position if view_position is not None else meta.view_position,
        "body_part": body_part if body_part is not None else meta.body_part,
    }
    info.update({k: v for k, v in fields.items() if v})
    info["photometric_interpretation"] = "MONOCHROME1" if mono1 else "MONOCHROME2"
    write_bytes_atomic(path, encoded.tobytes())
    if sidecar:
        text = json.dumps(info, indent=2, sort_keys=True) + "\n"
        write_bytes_atomic(path.with_suffix(".json"), text.encode("utf-8"))
    logger.debug("wrote %s (%s)", path, info["photometric_interpretation"])
