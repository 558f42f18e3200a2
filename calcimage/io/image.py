"""PNG / TIFF / JPEG radiograph reading (used by :func:`calcimage.load`).

Spacing and the metadata DICOM would carry come from an optional sidecar ``NAME.json``
next to the image::

    {"spacing_mm": [0.1, 0.1], "patient_id": "P01", "study_date": "2026-01-31",
     "laterality": "L", "view_position": "PA", "body_part": "HAND",
     "photometric_interpretation": "MONOCHROME2"}

Every key is optional; unknown keys are errors. ``MONOCHROME1`` means dark = dense and the
image is inverted.
"""

from __future__ import annotations

import errno
import json
import math
import struct
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from calcimage.errors import CalcimageWarning, FilmReadError
from calcimage.film import Film, FilmMetadata, SpacingSource
from calcimage.io.dicom import parse_da
from calcimage.io.load import check_pixel_limit, display_path, image_header_size, sniff_image_format

__all__ = ["load_image", "read_sidecar", "SIDECAR_KEYS"]

SIDECAR_KEYS = (
    "spacing_mm", "patient_id", "study_date", "laterality", "view_position", "body_part",
    "photometric_interpretation",
)

_FORMAT_OF_SUFFIX = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff"}


def read_sidecar(path: Path) -> dict[str, Any]:
    """Read ``NAME.json`` beside ``path`` (empty dict when there is none)."""
    sidecar = path.with_suffix(".json")
    name = display_path(sidecar)
    try:
        text = sidecar.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:  # NAME.json is longer than the file system allows
            return {}
        raise FilmReadError(f"{name}: cannot read sidecar JSON: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise FilmReadError(f"{name}: sidecar JSON is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise FilmReadError(f"{name}: sidecar is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise FilmReadError(f"{name}: sidecar must hold a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SIDECAR_KEYS))
    if unknown:
        raise FilmReadError(
            f"{name}: unknown sidecar key {unknown[0]!r}; valid keys are {', '.join(SIDECAR_KEYS)}"
        )
    return data


def _sidecar_spacing(sidecar_path: Path, value: Any) -> tuple[float, float]:
    items = value if isinstance(value, list) else [value, value]
    try:
        # JSON true/false would pass float(); strings such as "0.1" are not numbers either.
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
            raise TypeError
        pair = [float(v) for v in items]
    except (TypeError, ValueError, OverflowError):
        pair = []
    if len(pair) != 2 or not all(math.isfinite(v) and v > 0 for v in pair):
        raise FilmReadError(
            f"{display_path(sidecar_path)}: spacing_mm={value!r} is invalid; write two positive numbers in mm, "
            "e.g. [0.1, 0.1]"
        )
    return (pair[0], pair[1])


def _png_chunk_problem(data: bytes) -> str | None:
    """Why the PNG chunk layout is impossible, or None when every chunk fits in the file.

    OpenCV's PNG reader allocates a buffer of the length a chunk declares: a flipped length
    byte in a 100-byte file would make it reserve gigabytes. Checked before decoding.
    """
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if pos + 12 + length > len(data):
            return (
                f"chunk {kind!r} at byte {pos} declares {length} bytes but the file ends "
                f"{len(data) - pos - 12} bytes later (truncated or damaged)"
            )
        if kind == b"IEND":
            return None
        pos += 12 + length
    return "no IEND chunk (truncated)"


def _tiff_has_more_pages(data: bytes) -> bool:
    """True when the first TIFF image file directory links to a second one."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack(order + "I", data[4:8])
        (count,) = struct.unpack(order + "H", data[offset : offset + 2])
        at = offset + 2 + 12 * count
        (next_offset,) = struct.unpack(order + "I", data[at : at + 4])
    except struct.error:
        return False  # a damaged header: the decoder reports it
    return next_offset != 0


def load_image(
    path: Path, data: bytes, *, sha256: str, user_spacing: tuple[float, float] | None
) -> Film:
    """Decode a PNG/TIFF/JPEG radiograph into a :class:`Film` (see :func:`calcimage.load`).

    The format comes from the content; a name that says otherwise gives a warning. The size
    the header declares is checked against :data:`calcimage.io.load.MAX_PIXELS` before
    decoding.
    """
    name = display_path(path)
    fmt = sniff_image_format(data)
    if fmt is None:
        raise FilmReadError(f"{name}: not a PNG, TIFF, JPEG or DICOM file (unrecognised content)")
    expected = _FORMAT_OF_SUFFIX.get(path.suffix.lower())
    if expected != fmt and path.suffix:
        warnings.warn(
            f"{name}: file content is {fmt.upper()} but its name says {path.suffix[1:].upper()}; "
            f"decoded as {fmt.upper()} (rename the file to silence this warning)",
            CalcimageWarning,
            stacklevel=2,
        )
    if fmt == "tiff" and _tiff_has_more_pages(data):
        raise FilmReadError(
            f"{name}: multi-page TIFF is not supported (like multi-frame DICOM); save one film per file"
        )
    if fmt == "png":
        problem = _png_chunk_problem(data)
        if problem is not None:
            raise FilmReadError(f"{name}: corrupt PNG: {problem}")
    size = image_header_size(data, fmt)
    if size is None:
        # Decoders may skip garbage and find a frame header this parser did not: refuse
        # rather than decode a size nobody checked.
        raise FilmReadError(f"{name}: corrupt {fmt.upper()}: cannot read the image size from its header")
    check_pixel_limit(path, *size, what=f"{fmt.upper()} image")
    sidecar = read_sidecar(path)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise FilmReadError(f"{name}: cannot decode {fmt.upper()} image: {' '.join(str(exc).split())[:200]}") from None
    if img is None:
        raise FilmReadError(f"{name}: cannot decode {fmt.upper()} image (corrupt or truncated)")
    if img.ndim < 2 or img.size == 0:
        raise FilmReadError(f"{name}: decoded image has unsupported shape {img.shape}")
    check_pixel_limit(path, int(img.shape[0]), int(img.shape[1]), what=f"{fmt.upper()} image")
    if img.ndim == 3:
        channels = img.shape[2]
        if channels in (2, 4):
            warnings.warn(f"{name}: alpha channel ignored", CalcimageWarning, stacklevel=2)
            img = img[:, :, : channels - 1]
        if img.shape[2] == 3:
            if not (np.array_equal(img[:, :, 0], img[:, :, 1]) and np.array_equal(img[:, :, 1], img[:, :, 2])):
                warnings.warn(
                    f"{name}: colour image converted to grey (luma); radiographs should be greyscale",
                    CalcimageWarning,
                    stacklevel=2,
                )
                img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            else:
                img = img[:, :, 0]
        else:
            img = img[:, :, 0]
    if img.ndim != 2:
        raise FilmReadError(f"{name}: decoded image has unsupported shape {img.shape}")
    if img.dtype.kind not in "uif":
        raise FilmReadError(f"{name}: unsupported pixel type {img.dtype}")
    values = img.astype(np.float32)
    if not np.all(np.isfinite(values)):
        raise FilmReadError(f"{name}: image holds non-finite pixel values (or values beyond float32)")
    if img.dtype.kind in "ui":
        info = np.iinfo(img.dtype)
        lo, hi = float(info.min), float(info.max)
    else:
        lo, hi = float(values.min()), float(values.max())
    sidecar_path = path.with_suffix(".json")
    photometric = str(sidecar.get("photometric_interpretation", "MONOCHROME2")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise FilmReadError(
            f"{display_path(sidecar_path)}: photometric_interpretation={photometric!r} is invalid; "
            "use MONOCHROME1 (dark = dense) or MONOCHROME2"
        )
    inverted = photometric == "MONOCHROME1"
    if inverted:
        np.subtract(np.float32(hi + lo), values, out=values)

    if user_spacing is not None:
        spacing, source = user_spacing, SpacingSource.USER
    elif "spacing_mm" in sidecar:
        spacing, source = _sidecar_spacing(sidecar_path, sidecar["spacing_mm"]), SpacingSource.SIDECAR
    else:
        spacing, source = None, SpacingSource.NONE

    def text(key: str) -> str | None:
        value = sidecar.get(key)
        if value is None:
            return None
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise FilmReadError(
                f"{display_path(sidecar_path)}: {key}={value!r} is invalid; write it as a JSON string"
            )
        return str(value).strip() or None

    study_date = None
    if sidecar.get("study_date") is not None:
        study_date = parse_da(sidecar["study_date"])
        if study_date is None:
            raise FilmReadError(
                f"{display_path(sidecar_path)}: study_date={sidecar['study_date']!r} is not a date; "
                "write it as \"YYYY-MM-DD\" or \"YYYYMMDD\""
            )

    metadata = FilmMetadata(
        source_format=fmt,
        patient_id=text("patient_id"),
        study_date=study_date,
        laterality=text("laterality"),
        view_position=text("view_position"),
        body_part=text("body_part"),
        photometric_interpretation=photometric,
        bits_stored=int(img.dtype.itemsize * 8) if img.dtype.kind in "ui" else None,
        inverted=inverted,
        value_range=(lo, hi),
    )
    return Film(pixels=values, spacing_mm=spacing, spacing_source=source, metadata=metadata, path=path, sha256=sha256)
