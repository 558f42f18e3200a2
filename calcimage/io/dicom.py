"""DICOM radiograph reading (used by :func:`calcimage.load`).

Every element value is read defensively: a corrupt or oddly typed element either falls
back to "absent" (optional elements such as dates or windows) or gives a one-line
:class:`FilmReadError` (elements the pixels depend on, such as Rows or BitsStored).
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import math
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from calcimage.errors import CalcimageWarning, FilmReadError
from calcimage.film import Film, FilmMetadata, SpacingSource
from calcimage.io.load import check_pixel_limit, display_path, image_header_size

__all__ = ["load_dicom", "read_spacing", "parse_da", "SPACING_RANGE_MM"]

logger = logging.getLogger(__name__)

#: Spacing values outside this range (mm) are implausible for a radiograph and ignored.
SPACING_RANGE_MM = (1e-4, 1e3)

_SEQUENCE_TYPES = (list, tuple, MultiValue)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _read_dataset(path: Path, data: bytes) -> tuple[Dataset, list[str]]:
    name = display_path(path)
    notes: list[str] = []
    try:
        return pydicom.dcmread(io.BytesIO(data)), notes
    except InvalidDicomError:
        pass  # no preamble / file meta: retry below with force=True
    except Exception as exc:  # pydicom raises many types on corrupt files
        raise FilmReadError(f"{name}: cannot parse DICOM ({_short(exc)})") from None
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        readable = isinstance(ds, Dataset) and len(ds) > 0 and ("PixelData" in ds or "Rows" in ds)
    except Exception as exc:
        raise FilmReadError(f"{name}: not a DICOM file or image ({_short(exc)})") from None
    if not readable:
        raise FilmReadError(
            f"{name}: not a DICOM file (no DICM preamble and no readable DICOM elements); "
            "supported formats are DICOM, PNG, TIFF and JPEG"
        )
    return ds, notes


def _transfer_syntax(path: Path, ds: Dataset, notes: list[str]) -> UID:
    """The file's transfer syntax; assumed from how the data set was encoded when absent.

    A file without file meta (or with an empty or unknown TransferSyntaxUID) and native
    pixel data is read with the syntax pydicom found the elements in, with a warning.
    """
    name = display_path(path)
    ts = ds.file_meta.get("TransferSyntaxUID")
    if isinstance(ts, UID) and ts.is_transfer_syntax:
        return ts
    try:
        encapsulated = ds["PixelData"].is_undefined_length
    except Exception:
        encapsulated = False
    if encapsulated:
        raise FilmReadError(
            f"{name}: compressed pixel data with a missing or unknown TransferSyntaxUID "
            f"{_short_value(str(ts) if ts is not None else None)}; cannot tell how to decode it"
        )
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        implicit, little = True, True
    guess = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    if ts is None:
        note = f"no DICOM preamble/file meta: read with an assumed {guess.name} transfer syntax"
    else:
        note = f"TransferSyntaxUID {_short_value(str(ts))} is not a known syntax: assumed {guess.name}"
    notes.append(note)
    warnings.warn(f"{name}: {note}", CalcimageWarning, stacklevel=2)
    ds.file_meta.TransferSyntaxUID = guess
    return guess


def _get(ds: Dataset, keyword: str) -> Any:
    """An element's value, or None when absent, empty or unreadable."""
    try:
        value = ds.get(keyword)
    except Exception:  # a malformed element must not stop the whole read
        return None
    if value is None or value == "" or (isinstance(value, _SEQUENCE_TYPES) and len(value) == 0):
        return None
    return value


def _str(ds: Dataset, keyword: str) -> str | None:
    value = _get(ds, keyword)
    if value is None:
        return None
    try:
        text = str(value).strip()
    except Exception:
        return None
    return text or None


def _int(path: Path, ds: Dataset, keyword: str, default: int | None) -> int:
    """A single integer element the pixel data depends on; FilmReadError when unusable."""
    value = _get(ds, keyword)
    if value is None:
        if default is None:
            raise FilmReadError(f"{display_path(path)}: DICOM element {keyword} is missing or empty")
        return default
    try:
        if isinstance(value, _SEQUENCE_TYPES) or isinstance(value, (bytes, bool)):
            raise TypeError
        number = float(value)
        if not number.is_integer():
            raise ValueError
        return int(number)
    except (TypeError, ValueError, OverflowError):
        raise FilmReadError(
            f"{display_path(path)}: DICOM element {keyword}={_short_value(value)} is not a single integer"
        ) from None


def _float(path: Path, ds: Dataset, keyword: str, default: float) -> float:
    """A single finite number element the pixel values depend on; FilmReadError when unusable."""
    value = _get(ds, keyword)
    if value is None:
        return default
    try:
        if isinstance(value, _SEQUENCE_TYPES) or isinstance(value, (bytes, bool)):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not math.isfinite(number):
        raise FilmReadError(
            f"{display_path(path)}: DICOM element {keyword}={_short_value(value)} is not a single finite number"
        )
    return number


def _short_value(value: Any) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def parse_da(value: Any) -> dt.date | None:
    """Parse a DICOM DA value (``YYYYMMDD``; ``YYYY.MM.DD`` tolerated); None when invalid."""
    if value is None:
        return None
    text = str(value).strip().replace(".", "").replace("-", "")
    if len(text) != 8 or not text.isdigit() or not text.isascii():
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def _plausible(v: float) -> bool:
    return math.isfinite(v) and SPACING_RANGE_MM[0] <= v <= SPACING_RANGE_MM[1]


def _pair(value: Any) -> tuple[float, float] | None:
    """A positive finite (row, col) pair from a DS multi-value, or None (``0\\0`` is absent)."""
    if value is None:
        return None
    try:
        values = [float(v) for v in (value if isinstance(value, _SEQUENCE_TYPES) else [value])]
    except (TypeError, ValueError, OverflowError):
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
    ImagerPixelSpacing (detector plane); else none. Values outside
    :data:`SPACING_RANGE_MM` count as absent.
    """
    pixel = _pair(_get(ds, "PixelSpacing"))
    if pixel is not None and all(_plausible(v) for v in pixel):
        return pixel, SpacingSource.PIXEL_SPACING
    imager = _pair(_get(ds, "ImagerPixelSpacing"))
    if imager is None:
        return None, SpacingSource.NONE
    ermf = _get(ds, "EstimatedRadiographicMagnificationFactor")
    try:
        ermf_value = float(ermf) if ermf is not None and not isinstance(ermf, _SEQUENCE_TYPES) else None
    except (TypeError, ValueError, OverflowError):
        ermf_value = None
    if ermf_value is not None and math.isfinite(ermf_value) and ermf_value > 0:
        corrected = (imager[0] / ermf_value, imager[1] / ermf_value)
        if all(_plausible(v) for v in corrected):
            return corrected, SpacingSource.IMAGER_ERMF
    if all(_plausible(v) for v in imager):
        return imager, SpacingSource.IMAGER
    return None, SpacingSource.NONE


def _voi_windows(ds: Dataset) -> tuple[tuple[float, float], ...]:
    centers, widths = _get(ds, "WindowCenter"), _get(ds, "WindowWidth")
    if centers is None or widths is None:
        return ()

    def seq(v: Any) -> list[Any]:
        return list(v) if isinstance(v, _SEQUENCE_TYPES) else [v]

    try:
        windows = tuple((float(c), float(w)) for c, w in zip(seq(centers), seq(widths)))
    except (TypeError, ValueError, OverflowError):
        return ()
    return tuple(w for w in windows if all(math.isfinite(v) for v in w))


def _stored_range(bits_stored: int, signed: bool) -> tuple[int, int]:
    if signed:
        return -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    return 0, 2**bits_stored - 1


def _codestream_format(ts: UID) -> str | None:
    """"j2k" or "jpeg" for syntaxes whose frames carry their own size, else None (RLE...)."""
    if "2000" in ts.name or "HTJ2K" in ts.name:
        return "j2k"
    if "JPEG" in ts.name:
        return "jpeg"
    return None


def _has_sized_codestream(ts: UID) -> bool:
    return _codestream_format(ts) is not None


def _encapsulated_size(ds: Dataset, ts: UID) -> tuple[int, int] | None:
    """(rows, cols) declared by the first compressed fragment's JPEG / JPEG 2000 header."""
    fmt = _codestream_format(ts)
    if fmt is None:  # RLE and others: the decoded size is Rows x Columns
        return None
    try:
        head = bytes(ds.PixelData[:65536])
        # Item (FFFE,E000) with the Basic Offset Table, then the first fragment's item.
        if head[:4] != b"\xfe\xff\x00\xe0":
            return None
        (bot_length,) = struct.unpack("<I", head[4:8])
        at = 8 + bot_length
        if head[at : at + 4] != b"\xfe\xff\x00\xe0":
            return None
    except Exception:
        return None
    return image_header_size(head[at + 8 :], fmt)


def _rescale(stored: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """``stored * slope + intercept`` as float32, computed in float64 a block of rows at a time.

    float64 keeps the result exact to float32 rounding; blocks keep the temporary small
    (a film at MAX_PIXELS would otherwise need 800 MB for it).
    """
    values = np.empty(stored.shape, dtype=np.float32)
    step = max(1, (1 << 16) // max(1, stored.shape[1]))
    for r0 in range(0, stored.shape[0], step):
        values[r0 : r0 + step] = stored[r0 : r0 + step] * slope + intercept
    return values


def _check_native_length(path: Path, ds: Dataset, rows: int, cols: int, bits_allocated: int) -> None:
    """Uncompressed pixel data must hold exactly what Rows x Columns x BitsAllocated need.

    One trailing pad byte (odd lengths are padded to even) is allowed; anything else means
    the header does not describe the data, and measuring it would measure garbage.
    """
    pixels = rows * cols
    needed = (pixels + 7) // 8 if bits_allocated == 1 else pixels * bits_allocated // 8
    try:
        actual = len(ds.PixelData)
    except Exception as exc:
        raise FilmReadError(f"{display_path(path)}: cannot read pixel data: {_short(exc)}") from None
    if actual < needed:
        raise FilmReadError(
            f"{display_path(path)}: pixel data is truncated: {actual} bytes, but Rows x Columns = "
            f"{rows}x{cols} at {bits_allocated} bits need {needed}"
        )
    if actual > needed + (needed % 2):
        raise FilmReadError(
            f"{display_path(path)}: pixel data holds {actual} bytes but Rows x Columns = {rows}x{cols} "
            f"at {bits_allocated} bits need {needed}; the header does not match the data"
        )


def load_dicom(
    path: Path, data: bytes, *, sha256: str, user_spacing: tuple[float, float] | None
) -> Film:
    """Decode a DICOM radiograph into a :class:`Film` (see :func:`calcimage.load`).

    Warnings other than :class:`CalcimageWarning` (pydicom's remarks about odd element
    values) are caught by :func:`calcimage.load` and logged.
    """
    name = display_path(path)
    ds, notes = _read_dataset(path, data)
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise FilmReadError(
                f"{name}: float pixel data (parametric map) is not supported; radiographs store integers"
            )
        sop = _str(ds, "SOPClassUID")
        what = f" ({pydicom.uid.UID(sop).name})" if sop else ""
        raise FilmReadError(f"{name}: DICOM object has no pixel data{what}; it is not an image")
    rows, cols = _int(path, ds, "Rows", None), _int(path, ds, "Columns", None)
    if rows < 1 or cols < 1:
        raise FilmReadError(f"{name}: invalid image size Rows={rows} Columns={cols}")
    check_pixel_limit(path, rows, cols, "image")
    frames = _int(path, ds, "NumberOfFrames", 1)
    if frames > 1:
        raise FilmReadError(
            f"{name}: multi-frame DICOM ({frames} frames) is not supported; export one frame per file"
        )
    photometric = (_str(ds, "PhotometricInterpretation") or "MONOCHROME2").upper()
    samples = _int(path, ds, "SamplesPerPixel", 1)
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        if samples != 1 or photometric in ("RGB", "PALETTE COLOR") or photometric.startswith("YBR"):
            raise FilmReadError(
                f"{name}: colour DICOM ({photometric}, {samples} samples per pixel) is refused: "
                "radiographs must be greyscale; export the original MONOCHROME image"
            )
        raise FilmReadError(
            f"{name}: PhotometricInterpretation {_short_value(photometric)} is not supported; "
            "calcimage reads MONOCHROME1 and MONOCHROME2 films"
        )
    bits_allocated = _int(path, ds, "BitsAllocated", None)
    bits_stored = _int(path, ds, "BitsStored", bits_allocated)
    pixel_representation = _int(path, ds, "PixelRepresentation", 0)
    if bits_allocated not in (1, 8, 16, 32) or not 1 <= bits_stored <= bits_allocated:
        raise FilmReadError(
            f"{name}: unsupported BitsAllocated={bits_allocated} / BitsStored={bits_stored}; "
            "expected BitsAllocated 1, 8, 16 or 32 and 1 <= BitsStored <= BitsAllocated"
        )
    if pixel_representation not in (0, 1):
        raise FilmReadError(f"{name}: PixelRepresentation={pixel_representation} is invalid; must be 0 or 1")

    ts = _transfer_syntax(path, ds, notes)
    ts_name = ts.name
    if ts.is_compressed:
        declared = _encapsulated_size(ds, ts)
        if declared is None and _has_sized_codestream(ts):
            raise FilmReadError(
                f"{name}: cannot read the image size from the compressed frame's header ({ts_name}); "
                "the pixel data is damaged"
            )
        if declared is not None:
            # A codestream may declare a far larger image than Rows x Columns: refuse it
            # before the decoder allocates it.
            check_pixel_limit(path, *declared, what="compressed frame")
    if not ts.is_compressed:
        _check_native_length(path, ds, rows, cols, bits_allocated)
    try:
        stored = ds.pixel_array
    except Exception as exc:  # decoders raise anything from ValueError to RuntimeError
        raise FilmReadError(f"{name}: cannot decode pixel data ({ts_name}): {_short(exc)}") from None
    if stored.ndim != 2 or stored.shape != (rows, cols):
        raise FilmReadError(f"{name}: decoded pixel data has shape {stored.shape}, expected {(rows, cols)}")
    if stored.dtype.kind not in "ui":
        raise FilmReadError(f"{name}: decoded pixel data has unsupported type {stored.dtype}")
    del ds["PixelData"]  # the encoded copy is no longer needed: lower the peak memory

    modality_lut = "none"
    if "ModalityLUTSequence" in ds:
        modality_lut = "sequence"
    elif _get(ds, "RescaleSlope") is not None or _get(ds, "RescaleIntercept") is not None:
        modality_lut = "rescale"
    lo_stored, hi_stored = _stored_range(bits_stored, pixel_representation == 1)
    info = np.iinfo(stored.dtype)
    lo_stored, hi_stored = max(lo_stored, int(info.min)), min(hi_stored, int(info.max))
    try:
        if modality_lut == "none":
            values = stored.astype(np.float32)
            ends = np.array([lo_stored, hi_stored], dtype=np.float64)
        elif modality_lut == "rescale":
            # Done here rather than by pydicom, which skips the rescale unless both
            # elements are present; a lone slope or intercept uses the default for the other.
            slope = _float(path, ds, "RescaleSlope", 1.0)
            intercept = _float(path, ds, "RescaleIntercept", 0.0)
            values = _rescale(stored, slope, intercept)
            ends = np.array([lo_stored, hi_stored], dtype=np.float64) * slope + intercept
        else:
            # apply_modality_lut indexes the LUT with the stored values: it needs integers.
            values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
            if modality_lut == "sequence" and hi_stored - lo_stored <= 65535:
                # A LUT need not be monotonic: its range is the range of all its outputs.
                domain = np.arange(lo_stored, hi_stored + 1).astype(stored.dtype)
            else:
                domain = np.array([lo_stored, hi_stored]).astype(stored.dtype)
            ends = np.asarray(apply_modality_lut(domain, ds), dtype=np.float64)
    except Exception as exc:
        raise FilmReadError(f"{name}: cannot apply the modality LUT ({modality_lut}): {_short(exc)}") from None
    if values.shape != (rows, cols):
        raise FilmReadError(f"{name}: the modality LUT changed the image shape to {values.shape}")
    # min/max propagate NaN, so they check finiteness without a film-sized temporary.
    if not all(math.isfinite(float(v)) for v in (values.min(), values.max(), ends.min(), ends.max())):
        raise FilmReadError(
            f"{name}: pixel values are not finite after the modality LUT ({modality_lut}); "
            "check RescaleSlope / RescaleIntercept"
        )
    lo = float(min(ends.min(), float(values.min())))
    hi = float(max(ends.max(), float(values.max())))

    presentation = _str(ds, "PresentationLUTShape")
    inverted = photometric == "MONOCHROME1"
    if inverted:
        # Invert once. PresentationLUTShape INVERSE on a MONOCHROME1 film describes this same
        # inversion (DX requires it), so it never adds a second one.
        np.subtract(np.float32(hi + lo), values, out=values)  # in place: films can be large
        if not (math.isfinite(float(values.min())) and math.isfinite(float(values.max()))):
            raise FilmReadError(f"{name}: pixel values overflow when inverting the MONOCHROME1 film")
    elif presentation is not None and presentation.upper() == "INVERSE":
        notes.append("MONOCHROME2 with PresentationLUTShape INVERSE: values used as stored")
        warnings.warn(
            f"{name}: MONOCHROME2 film has PresentationLUTShape INVERSE; measuring stored values "
            "as brighter = denser",
            CalcimageWarning,
            stacklevel=2,
        )

    if user_spacing is not None:
        spacing, source = user_spacing, SpacingSource.USER
    else:
        spacing, source = read_spacing(ds)

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
        bits_stored=bits_stored,
        transfer_syntax=str(ts),
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
