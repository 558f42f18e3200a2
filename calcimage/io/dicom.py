"""DICOM radiograph reading (used by :func:`calcimage.load`)."""

from __future__ import annotations

import datetime as dt
import io
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ImplicitVRLittleEndian

from calcimage.errors import CalcimageWarning, FilmReadError
from calcimage.film import Film, FilmMetadata, SpacingSource

__all__ = ["load_dicom", "read_spacing", "parse_da"]

logger = logging.getLogger(__name__)


def _read_dataset(path: Path, data: bytes) -> tuple[Dataset, list[str]]:
    notes: list[str] = []
    try:
        return pydicom.dcmread(io.BytesIO(data)), notes
    except InvalidDicomError:
        pass  # no preamble / file meta: retry below with force=True
    except Exception as exc:  # pydicom raises many types on corrupt files
        raise FilmReadError(f"{path}: cannot parse DICOM ({_short(exc)})") from None
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:
        raise FilmReadError(f"{path}: not a DICOM file or image ({_short(exc)})") from None
    if not isinstance(ds, Dataset) or len(ds) == 0 or ("PixelData" not in ds and "Rows" not in ds):
        raise FilmReadError(
            f"{path}: not a DICOM file (no DICM preamble and no readable DICOM elements); "
            "supported formats are DICOM, PNG, TIFF and JPEG"
        )
    if "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        note = "no DICOM preamble/file meta: read with an assumed implicit VR little endian syntax"
        notes.append(note)
        warnings.warn(f"{path}: {note}", CalcimageWarning, stacklevel=2)
    return ds, notes


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _get(ds: Dataset, keyword: str) -> Any:
    try:
        value = ds.get(keyword)
    except Exception:  # a malformed element must not stop the whole read
        return None
    if value is None or value == "":
        return None
    return value


def _str(ds: Dataset, keyword: str) -> str | None:
    value = _get(ds, keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def parse_da(value: Any) -> dt.date | None:
    """Parse a DICOM DA value (``YYYYMMDD``; ``YYYY.MM.DD`` tolerated); None when invalid."""
    if value is None:
        return None
    text = str(value).strip().replace(".", "").replace("-", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def _pair(value: Any) -> tuple[float, float] | None:
    """A positive finite (row, col) pair from a DS multi-value, or None (``0\\0`` is absent)."""
    if value is None:
        return None
    try:
        values = [float(v) for v in (value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value])]
    except (TypeError, ValueError):
        return None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        return None
    return (values[0], values[1])


def read_spacing(ds: Dataset) -> tuple[tuple[float, float] | None, SpacingSource]:
    """Pixel spacing in mm and where it came from.

    PixelSpacing when present and non-zero; else ImagerPixelSpacing divided by
    EstimatedRadiographicMagnificationFactor when that is present and > 0; else
    ImagerPixelSpacing (detector plane); else none.
    """
    pixel = _pair(_get(ds, "PixelSpacing"))
    if pixel is not None:
        return pixel, SpacingSource.PIXEL_SPACING
    imager = _pair(_get(ds, "ImagerPixelSpacing"))
    if imager is None:
        return None, SpacingSource.NONE
    ermf = _get(ds, "EstimatedRadiographicMagnificationFactor")
    try:
        ermf_value = float(ermf) if ermf is not None else None
    except (TypeError, ValueError):
        ermf_value = None
    if ermf_value is not None and math.isfinite(ermf_value) and ermf_value > 0:
        return (imager[0] / ermf_value, imager[1] / ermf_value), SpacingSource.IMAGER_ERMF
    return imager, SpacingSource.IMAGER


def _voi_windows(ds: Dataset) -> tuple[tuple[float, float], ...]:
    centers, widths = _get(ds, "WindowCenter"), _get(ds, "WindowWidth")
    if centers is None or widths is None:
        return ()
    seq = lambda v: list(v) if isinstance(v, (list, tuple, pydicom.multival.MultiValue)) else [v]  # noqa: E731
    try:
        return tuple((float(c), float(w)) for c, w in zip(seq(centers), seq(widths)))
    except (TypeError, ValueError):
        return ()


def _stored_range(ds: Dataset, arr: np.ndarray) -> tuple[int, int]:
    bits = int(_get(ds, "BitsStored") or arr.dtype.itemsize * 8)
    if int(_get(ds, "PixelRepresentation") or 0) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def load_dicom(
    path: Path, data: bytes, *, sha256: str, user_spacing: tuple[float, float] | None
) -> Film:
    """Decode a DICOM radiograph into a :class:`Film` (see :func:`calcimage.load`)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        film = _load_dicom(path, data, sha256=sha256, user_spacing=user_spacing)
    for w in caught:
        if issubclass(w.category, CalcimageWarning):
            warnings.warn(w.message, w.category, stacklevel=3)
        else:  # pydicom's remarks about odd element values: log, do not alarm the user
            logger.debug("%s: pydicom: %s", path, w.message)
    return film


def _load_dicom(
    path: Path, data: bytes, *, sha256: str, user_spacing: tuple[float, float] | None
) -> Film:
    from calcimage.io.load import MAX_PIXELS

    ds, notes = _read_dataset(path, data)
    if "PixelData" not in ds:
        sop = _str(ds, "SOPClassUID")
        what = f" ({pydicom.uid.UID(sop).name})" if sop else ""
        raise FilmReadError(f"{path}: DICOM object has no pixel data{what}; it is not an image")
    rows, cols = int(_get(ds, "Rows") or 0), int(_get(ds, "Columns") or 0)
    if rows < 1 or cols < 1:
        raise FilmReadError(f"{path}: invalid image size Rows={rows} Columns={cols}")
    if rows * cols > MAX_PIXELS:
        raise FilmReadError(
            f"{path}: image of {rows}x{cols} = {rows * cols} pixels exceeds the limit of "
            f"{MAX_PIXELS} pixels; refusing to decode"
        )
    frames = int(_get(ds, "NumberOfFrames") or 1)
    if frames > 1:
        raise FilmReadError(
            f"{path}: multi-frame DICOM ({frames} frames) is not supported; export one frame per file"
        )
    photometric = (_str(ds, "PhotometricInterpretation") or "MONOCHROME2").upper()
    samples = int(_get(ds, "SamplesPerPixel") or 1)
    if samples != 1 or not photometric.startswith("MONOCHROME"):
        raise FilmReadError(
            f"{path}: colour DICOM ({photometric}, {samples} samples per pixel) is refused: "
            "radiographs must be greyscale; export the original MONOCHROME image"
        )
    ts = ds.file_meta.get("TransferSyntaxUID")
    ts_name = ts.name if ts is not None else "unknown"
    try:
        stored = ds.pixel_array
    except Exception as exc:  # decoders raise anything from ValueError to RuntimeError
        raise FilmReadError(f"{path}: cannot decode pixel data ({ts_name}): {_short(exc)}") from None
    if stored.ndim != 2 or stored.shape != (rows, cols):
        raise FilmReadError(
            f"{path}: decoded pixel data has shape {stored.shape}, expected {(rows, cols)}"
        )

    modality_lut = "none"
    if "ModalityLUTSequence" in ds:
        modality_lut = "sequence"
    elif _get(ds, "RescaleSlope") is not None or _get(ds, "RescaleIntercept") is not None:
        modality_lut = "rescale"
    lo_stored, hi_stored = _stored_range(ds, stored)
    try:
        if modality_lut == "none":
            values = stored.astype(np.float32)
            ends = np.array([lo_stored, hi_stored], dtype=np.float64)
        else:
            # apply_modality_lut indexes the LUT with the stored values: it needs integers.
            values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
            ends_in = np.clip(np.array([lo_stored, hi_stored]), np.iinfo(stored.dtype).min, np.iinfo(stored.dtype).max)
            ends = np.asarray(apply_modality_lut(ends_in.astype(stored.dtype), ds), dtype=np.float64)
    except Exception as exc:
        raise FilmReadError(f"{path}: cannot apply the modality LUT: {_short(exc)}") from None
    if not np.all(np.isfinite(values)):
        raise FilmReadError(f"{path}: pixel values are not finite after the modality LUT")
    lo = float(min(ends.min(), float(values.min())))
    hi = float(max(ends.max(), float(values.max())))

    presentation = _str(ds, "PresentationLUTShape")
    inverted = photometric == "MONOCHROME1"
    if inverted:
        # Invert once. PresentationLUTShape INVERSE on a MONOCHROME1 film describes this same
        # inversion (DX requires it), so it never adds a second one.
        values = np.float32(hi + lo) - values
    elif presentation == "INVERSE":
        notes.append("MONOCHROME2 with PresentationLUTShape INVERSE: values used as stored")
        warnings.warn(
            f"{path}: MONOCHROME2 film has PresentationLUTShape INVERSE; measuring stored values "
            "as brighter = denser",
            CalcimageWarning,
            stacklevel=3,
        )

    if user_spacing is not None:
        spacing, source = user_spacing, SpacingSource.USER
    else:
        spacing, source = read_spacing(ds)

    bits_stored = _get(ds, "BitsStored")
    metadata = FilmMetadata(
        source_format="dicom",
        patient_id=_str(ds, "PatientID"),
        study_date=parse_da(_get(ds, "StudyDate")) or parse_da(_get(ds, "AcquisitionDate")),
        laterality=_str(ds, "ImageLaterality") or _str(ds, "Laterality"),
        view_position=_str(ds, "ViewPosition"),
        body_part=_str(ds, "BodyPartExamined"),
        modality=_str(ds, "Modality"),
        sop_instance_uid=_str(ds, "SOPInstanceUID"),
        series_instance_uid=_str(ds, "SeriesInstanceUID"),
        study_instance_uid=_str(ds, "StudyInstanceUID"),
        sop_class_uid=_str(ds, "SOPClassUID"),
        photometric_interpretation=photometric,
        presentation_lut_shape=presentation,
        bits_stored=int(bits_stored) if bits_stored is not None else None,
        transfer_syntax=str(ts) if ts is not None else None,
        inverted=inverted,
        modality_lut=modality_lut,
        voi_windows=_voi_windows(ds),
        voi_lut_function=_str(ds, "VOILUTFunction"),
        voi_lut_sequence="VOILUTSequence" in ds,
        value_range=(lo, hi),
        notes=tuple(notes),
    )
    return Film(
        pixels=values,
        spacing_mm=spacing,
        spacing_source=source,
        metadata=metadata,
        path=path,
        sha256=sha256,
    )
