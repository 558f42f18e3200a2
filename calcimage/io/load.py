"""``load(path) -> Film``: DICOM, PNG, TIFF and JPEG radiographs.

Rules (see docs/loading.md):

- DICOM: modality LUT applied (Rescale or Modality LUT Sequence); MONOCHROME1 inverted
  exactly once so brighter = denser (PresentationLUTShape INVERSE describes that same
  inversion and never triggers a second one); VOI windows and VOI LUTs are recorded but
  never applied; spacing from PixelSpacing, else ImagerPixelSpacing / ERMF, else
  ImagerPixelSpacing, with ``0\\0`` counting as absent.
- Images: decoded with OpenCV ``IMREAD_UNCHANGED`` so 16-bit stays 16-bit; colour is
  converted to grey with a warning; spacing and metadata from a sidecar ``NAME.json``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from calcimage.errors import FilmReadError
from calcimage.film import Film

__all__ = ["load", "MAX_PIXELS", "IMAGE_SUFFIXES", "DICOM_SUFFIXES", "read_input_bytes"]

logger = logging.getLogger(__name__)

#: Films larger than this many pixels are refused before decoding (decompression-bomb guard).
MAX_PIXELS = 100_000_000
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", "")


def read_input_bytes(path: Path) -> bytes:
    """Read a whole input file, turning OS errors into a one-line :class:`FilmReadError`."""
    try:
        if path.is_dir():
            raise FilmReadError(f"{path}: is a folder, not a film")
        data = path.read_bytes()
    except FilmReadError:
        raise
    except FileNotFoundError:
        raise FilmReadError(f"{path}: no such file") from None
    except PermissionError:
        raise FilmReadError(f"{path}: permission denied; check the file's read permission") from None
    except OSError as exc:
        raise FilmReadError(f"{path}: cannot read file: {exc.strerror or exc}") from None
    if not data:
        raise FilmReadError(f"{path}: file is empty (0 bytes)")
    return data


def _parse_spacing(path: Path, spacing_mm: float | tuple[float, float] | None) -> tuple[float, float] | None:
    if spacing_mm is None:
        return None
    if isinstance(spacing_mm, (int, float)):
        pair = (float(spacing_mm), float(spacing_mm))
    else:
        try:
            pair = tuple(float(v) for v in spacing_mm)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            pair = ()
    import math

    if len(pair) != 2 or not all(math.isfinite(v) and v > 0 for v in pair):
        from calcimage.errors import ParameterError

        raise ParameterError(
            f"spacing_mm={spacing_mm!r} for {path} is invalid: give one positive number "
            "or a (row, col) pair in mm, e.g. 0.1"
        )
    return pair  # type: ignore[return-value]


def _looks_like_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def load(path: str | os.PathLike[str], *, spacing_mm: float | tuple[float, float] | None = None) -> Film:
    """Load a radiograph.

    Parameters
    ----------
    path
        A DICOM file (with or without file meta), or a PNG / TIFF / JPEG image.
    spacing_mm
        Pixel spacing in mm, one number or (row, col). Overrides what the file says and is
        recorded with source ``user``.

    Returns
    -------
    Film
        float32 pixels, brighter = denser, with spacing, its source and metadata.

    Raises
    ------
    FilmReadError
        The file is missing, unreadable, not an image, or an image calcimage cannot measure
        (multi-frame, colour DICOM, no pixel data, undecodable). The message is one line
        naming the file and the reason.
    ParameterError
        ``spacing_mm`` is not positive.
    """
    path = Path(path)
    user_spacing = _parse_spacing(path, spacing_mm)
    data = read_input_bytes(path)
    sha256 = hashlib.sha256(data).hexdigest()
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES and not _looks_like_dicom(data):
        from calcimage.io.image import load_image

        film = load_image(path, data, sha256=sha256, user_spacing=user_spacing)
    else:
        from calcimage.io.dicom import load_dicom

        film = load_dicom(path, data, sha256=sha256, user_spacing=user_spacing)
    logger.debug(
        "loaded %s: %dx%d, spacing %s (%s)", path, *film.shape, film.spacing_mm, film.spacing_source.value
    )
    return film
