"""``load(path) -> Film``: DICOM, PNG, TIFF and JPEG radiographs.

Rules (see docs/loading.md):

- DICOM: modality LUT applied (Rescale or Modality LUT Sequence); MONOCHROME1 inverted
  exactly once so brighter = denser (PresentationLUTShape INVERSE describes that same
  inversion and never triggers a second one); VOI windows and VOI LUTs are recorded but
  never applied; spacing from PixelSpacing, else ImagerPixelSpacing / ERMF, else
  ImagerPixelSpacing, with ``0\\0`` counting as absent.
- Images: decoded with OpenCV ``IMREAD_UNCHANGED`` so 16-bit stays 16-bit; colour is
  converted to grey with a warning; spacing and metadata from a sidecar ``NAME.json``.
- Limits: files above :data:`MAX_FILE_BYTES` and images above :data:`MAX_PIXELS` are refused
  before anything is decoded (decompression-bomb guard); only regular files are read.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import stat
import struct
import unicodedata
import warnings
from pathlib import Path

import numpy as np

from calcimage.errors import CalcimageWarning, FilmReadError, ParameterError
from calcimage.film import Film

__all__ = [
    "load",
    "MAX_PIXELS",
    "MAX_FILE_BYTES",
    "IMAGE_SUFFIXES",
    "DICOM_SUFFIXES",
    "read_input_bytes",
    "display_path",
    "sniff_image_format",
    "image_header_size",
    "check_pixel_limit",
]

logger = logging.getLogger(__name__)

#: Films larger than this many pixels are refused before decoding (decompression-bomb guard).
MAX_PIXELS = 100_000_000
#: Files larger than this many bytes are refused before they are read (1 GiB).
MAX_FILE_BYTES = 1 << 30
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", "")

_IMAGE_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
}
#: JPEG start-of-frame markers (SOF0-SOF15 without DHT, JPG and DAC) plus JPEG-LS SOF55.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}


def display_path(path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    """A printable one-line form of ``path`` for messages.

    Undecodable bytes of non-UTF-8 names (kept by Python as surrogate escapes) become ``\\xNN``
    and control characters (newlines, escapes) are written as escapes, so a message naming
    the file is always one printable line.
    """
    text = os.fsdecode(os.fspath(path))
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # surrogate escape of an undecodable byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def read_input_bytes(path: Path) -> bytes:
    """Read a whole input file, turning OS errors into a one-line :class:`FilmReadError`.

    Only regular files up to :data:`MAX_FILE_BYTES` are read: folders, FIFOs and devices
    are refused before opening them (a FIFO or ``/dev/zero`` would otherwise block or
    exhaust memory).
    """
    name = display_path(path)
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise FilmReadError(f"{name}: is a folder, not a film")
        if not stat.S_ISREG(info.st_mode):
            raise FilmReadError(f"{name}: not a regular file (device, FIFO or socket); give a film file")
        if info.st_size > MAX_FILE_BYTES:
            raise FilmReadError(
                f"{name}: file of {info.st_size} bytes exceeds the limit of {MAX_FILE_BYTES} bytes; "
                "refusing to read it"
            )
        with open(path, "rb") as fh:
            # read() without a size: read(n) would reserve n bytes up front.
            data = fh.read()
    except FilmReadError:
        raise
    except FileNotFoundError:
        raise FilmReadError(f"{name}: no such file") from None
    except PermissionError:
        raise FilmReadError(f"{name}: permission denied; check the file's read permission") from None
    except OSError as exc:
        raise FilmReadError(f"{name}: cannot read file: {exc.strerror or exc}") from None
    if not data:
        raise FilmReadError(f"{name}: file is empty (0 bytes)")
    if len(data) > MAX_FILE_BYTES:  # the file grew after stat
        raise FilmReadError(f"{name}: file exceeds the limit of {MAX_FILE_BYTES} bytes; refusing to read it")
    return data


def sniff_image_format(data: bytes) -> str | None:
    """``"png"``, ``"jpeg"`` or ``"tiff"`` from the leading magic bytes, else None."""
    for magic, fmt in _IMAGE_MAGIC.items():
        if data.startswith(magic):
            return fmt
    return None


def _jpeg_size(data: bytes, start: int = 2) -> tuple[int, int] | None:
    """(rows, cols) from the first JPEG / JPEG-LS start-of-frame segment, or None."""
    i, n = start, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # segments without a length
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in _JPEG_SOF:
            if i + 9 > n:
                return None
            rows, cols = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(rows), int(cols)
        if marker == 0xDA or length < 2:  # start of scan before any frame header: give up
            return None
        i += 2 + length
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """(rows, cols) from the first TIFF image file directory, or None."""
    if len(data) < 8:
        return None
    order = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", data[4:8])
    if offset + 2 > len(data):
        return None
    (count,) = struct.unpack(order + "H", data[offset : offset + 2])
    found: dict[int, int] = {}
    for k in range(count):
        entry = offset + 2 + 12 * k
        if entry + 12 > len(data):
            break
        tag, typ, _n = struct.unpack(order + "HHI", data[entry : entry + 8])
        if tag in (256, 257):
            if typ == 3:  # SHORT
                (value,) = struct.unpack(order + "H", data[entry + 8 : entry + 10])
            elif typ == 4:  # LONG
                (value,) = struct.unpack(order + "I", data[entry + 8 : entry + 12])
            else:
                continue
            found[tag] = int(value)
    if 256 in found and 257 in found:
        return found[257], found[256]
    return None


def _j2k_size(data: bytes) -> tuple[int, int] | None:
    """(rows, cols) from a JPEG 2000 SIZ marker segment found in ``data``, or None."""
    at = data.find(b"\xff\x4f\xff\x51")
    if at < 0 or at + 24 > len(data):
        return None
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", data[at + 8 : at + 24])
    return max(ysiz - yosiz, 0), max(xsiz - xosiz, 0)


def image_header_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """(rows, cols) an encoded image declares, read from its header without decoding.

    ``fmt`` is ``"png"``, ``"jpeg"``, ``"tiff"`` or ``"j2k"``; None when the header cannot
    be parsed (the decoder then reports the corruption).
    """
    try:
        if fmt == "png":
            if len(data) >= 24 and data[12:16] == b"IHDR":
                cols, rows = struct.unpack(">II", data[16:24])
                return int(rows), int(cols)
            return None
        if fmt == "jpeg":
            return _jpeg_size(data, 2) if data.startswith(b"\xff\xd8") else None
        if fmt == "tiff":
            return _tiff_size(data)
        if fmt == "j2k":
            return _j2k_size(data)
    except struct.error:
        return None
    raise ValueError(f"unknown image format {fmt!r}")


def check_pixel_limit(path: Path, rows: int, cols: int, what: str = "image") -> None:
    """Raise :class:`FilmReadError` when ``rows x cols`` exceeds :data:`MAX_PIXELS`."""
    if rows * cols > MAX_PIXELS:
        raise FilmReadError(
            f"{display_path(path)}: {what} of {rows}x{cols} = {rows * cols} pixels exceeds the limit "
            f"of {MAX_PIXELS} pixels; refusing to decode it"
        )


def _parse_spacing(path: Path, spacing_mm: float | tuple[float, float] | None) -> tuple[float, float] | None:
    if spacing_mm is None:
        return None
    pair: tuple[float, ...]
    if isinstance(spacing_mm, (int, float)) and not isinstance(spacing_mm, bool):
        pair = (float(spacing_mm), float(spacing_mm))
    else:
        try:
            pair = tuple(float(v) for v in spacing_mm)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            pair = ()
    if len(pair) != 2 or not all(math.isfinite(v) and v > 0 for v in pair):
        raise ParameterError(
            f"spacing_mm={spacing_mm!r} for {display_path(path)} is invalid: give one positive number "
            "or a (row, col) pair in mm, e.g. 0.1"
        )
    return (pair[0], pair[1])


def _looks_like_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def load(
    path: str | bytes | os.PathLike[str] | os.PathLike[bytes],
    *,
    spacing_mm: float | tuple[float, float] | None = None,
) -> Film:
    """Load a radiograph.

    The format is decided by the file's content (DICM preamble, PNG/JPEG/TIFF magic bytes);
    a file without either is read as DICOM without file meta unless its name says it is an
    image. A name that disagrees with the content gives a :class:`CalcimageWarning`.

    Parameters
    ----------
    path
        A DICOM file (with or without file meta), or a PNG / TIFF / JPEG image. ``bytes``
        paths are accepted for names that are not valid UTF-8.
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
        The file is missing, unreadable, not an image, too large, or an image calcimage
        cannot measure (multi-frame, colour DICOM, no pixel data, undecodable). The message
        is one line naming the file and the reason.
    ParameterError
        ``spacing_mm`` is not positive.
    """
    path = Path(os.fsdecode(os.fspath(path)))
    user_spacing = _parse_spacing(path, spacing_mm)
    data = read_input_bytes(path)
    sha256 = hashlib.sha256(data).hexdigest()
    suffix = path.suffix.lower()
    is_dicom = _looks_like_dicom(data)
    use_image = not is_dicom and (sniff_image_format(data) is not None or suffix in IMAGE_SUFFIXES)
    # Decoders and numpy may warn about odd content; only CalcimageWarnings reach the caller,
    # the rest are logged, so a library warning never turns into an error under -W error.
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        if use_image:
            from calcimage.io.image import load_image

            film = load_image(path, data, sha256=sha256, user_spacing=user_spacing)
        else:
            from calcimage.io.dicom import load_dicom

            if is_dicom and suffix in IMAGE_SUFFIXES:
                warnings.warn(
                    f"{display_path(path)}: file content is DICOM but its name says {suffix[1:].upper()}; "
                    "read as DICOM",
                    CalcimageWarning,
                    stacklevel=2,
                )
            film = load_dicom(path, data, sha256=sha256, user_spacing=user_spacing)
    for w in caught:
        if issubclass(w.category, CalcimageWarning):
            warnings.warn(str(w.message), w.category, stacklevel=2)
        else:
            logger.debug("%s: %s: %s", display_path(path), w.category.__name__, w.message)
    low, high = float(film.pixels.min()), float(film.pixels.max())
    if low == high:
        # Loads (the file is valid) but nothing can be measured on it: say so now.
        warnings.warn(
            f"{display_path(path)}: all {film.pixels.size} pixels have the same value {low:g}; "
            "the film holds no image to measure",
            CalcimageWarning,
            stacklevel=2,
        )
    logger.debug(
        "loaded %s: %dx%d, spacing %s (%s)",
        display_path(path), *film.shape, film.spacing_mm, film.spacing_source.value,
    )
    return film
