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

__all__ = ["load_image", "read_sidecar", "SIDECAR_KEYS"]

SIDECAR_KEYS = (
    "spacing_mm", "patient_id", "study_date", "laterality", "view_position", "body_part",
    "photometric_interpretation",
)

_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
}
_FORMAT_OF_SUFFIX = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff"}


def _sniff(data: bytes) -> str | None:
    for magic, fmt in _MAGIC.items():
        if data.startswith(magic):
            return fmt
    return None


def read_sidecar(path: Path) -> dict[str, Any]:
    """Read ``NAME.json`` beside ``path`` (empty dict when there is none)."""
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FilmReadError(f"{sidecar}: cannot read sidecar JSON: {exc}") from None
    if not isinstance(data, dict):
        raise FilmReadError(f"{sidecar}: sidecar must hold a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SIDECAR_KEYS))
    if unknown:
        raise FilmReadError(
            f"{sidecar}: unknown sidecar key {unknown[0]!r}; valid keys are {', '.join(SIDECAR_KEYS)}"
        )
    return data


def _sidecar_spacing(sidecar_path: Path, value: Any) -> tuple[float, float]:
    try:
        pair = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)] * 2
    except (TypeError, ValueError):
        pair = []
    if len(pair) != 2 or not all(math.isfinite(v) and v > 0 for v in pair):
        raise FilmReadError(
            f"{sidecar_path}: spacing_mm={value!r} is invalid; write two positive numbers in mm, "
            "e.g. [0.1, 0.1]"
        )
    return (pair[0], pair[1])


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(height), int(width)
    return None


def load_image(
    path: Path, data: bytes, *, sha256: str, user_spacing: tuple[float, float] | None
) -> Film:
    """Decode a PNG/TIFF/JPEG radiograph into a :class:`Film` (see :func:`calcimage.load`)."""
    from calcimage.io.load import MAX_PIXELS

    fmt = _sniff(data)
    if fmt is None:
        raise FilmReadError(f"{path}: not a PNG, TIFF, JPEG or DICOM file (unrecognised content)")
    expected = _FORMAT_OF_SUFFIX.get(path.suffix.lower())
    if expected is not None and expected != fmt:
        raise FilmReadError(
            f"{path}: file content is {fmt.upper()} but its name says {expected.upper()}; "
            f"rename it with the right extension"
        )
    size = _png_size(data) if fmt == "png" else None
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise FilmReadError(
            f"{path}: image of {size[0]}x{size[1]} = {size[0] * size[1]} pixels exceeds the limit "
            f"of {MAX_PIXELS} pixels; refusing to decode"
        )
    sidecar = read_sidecar(path)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise FilmReadError(f"{path}: cannot decode {fmt.upper()} image: {' '.join(str(exc).split())[:200]}") from None
    if img is None:
        raise FilmReadError(f"{path}: cannot decode {fmt.upper()} image (corrupt or truncated)")
    if img.ndim == 3:
        channels = img.shape[2]
        if channels in (2, 4):
            warnings.warn(f"{path}: alpha channel ignored", CalcimageWarning, stacklevel=3)
            img = img[:, :, : channels - 1]
        if img.shape[2] == 3:
            if not (np.array_equal(img[:, :, 0], img[:, :, 1]) and np.array_equal(img[:, :, 1], img[:, :, 2])):
                warnings.warn(
                    f"{path}: colour image converted to grey (luma); radiographs should be greyscale",
                    CalcimageWarning,
                    stacklevel=3,
                )
                img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            else:
                img = img[:, :, 0]
        else:
            img = img[:, :, 0]
    if img.ndim != 2 or img.size == 0:
        raise FilmReadError(f"{path}: decoded image has unsupported shape {img.shape}")
    if img.dtype.kind not in "uif":
        raise FilmReadError(f"{path}: unsupported pixel type {img.dtype}")
    values = img.astype(np.float32)
    if not np.all(np.isfinite(values)):
        raise FilmReadError(f"{path}: image holds non-finite pixel values")
    if img.dtype.kind in "ui":
        info = np.iinfo(img.dtype)
        lo, hi = float(info.min), float(info.max)
    else:
        lo, hi = float(values.min()), float(values.max())
    sidecar_path = path.with_suffix(".json")
    photometric = str(sidecar.get("photometric_interpretation", "MONOCHROME2")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise FilmReadError(
            f"{sidecar_path}: photometric_interpretation={photometric!r} is invalid; "
            "use MONOCHROME1 (dark = dense) or MONOCHROME2"
        )
    inverted = photometric == "MONOCHROME1"
    if inverted:
        values = np.float32(hi + lo) - values

    if user_spacing is not None:
        spacing, source = user_spacing, SpacingSource.USER
    elif "spacing_mm" in sidecar:
        spacing, source = _sidecar_spacing(sidecar_path, sidecar["spacing_mm"]), SpacingSource.SIDECAR
    else:
        spacing, source = None, SpacingSource.NONE

    def text(key: str) -> str | None:
        value = sidecar.get(key)
        return str(value).strip() or None if value is not None else None

    metadata = FilmMetadata(
        source_format=fmt,
        patient_id=text("patient_id"),
        study_date=parse_da(sidecar.get("study_date")),
        laterality=text("laterality"),
        view_position=text("view_position"),
        body_part=text("body_part"),
        photometric_interpretation=photometric,
        bits_stored=int(img.dtype.itemsize * 8) if img.dtype.kind in "ui" else None,
        inverted=inverted,
        value_range=(lo, hi),
    )
    return Film(pixels=values, spacing_mm=spacing, spacing_source=source, metadata=metadata, path=path, sha256=sha256)
