"""Named regions of a film: per-region lesion totals and excluded areas.

A region description comes from one of:

- nothing (``None``, ``""``, ``"film"``): one region named ``film`` covering the whole film;
- ``"grid RxC"`` (also ``grid:RxC``): R rows × C columns of equal cells over the whole film,
  named ``r1c1``, ``r1c2``, … in raster order;
- a JSON file of named polygons::

      {"units": "mm",                       # or "px" (default)
       "regions": [
         {"name": "thumb", "polygon": [[row, col], [row, col], ...]},
         {"name": "ring", "polygon": [...], "exclude": true}
       ]}

  Vertices are (row, col) from the film's top-left corner, in pixels or mm. Where polygons
  overlap, the later one wins. ``"exclude": true`` masks the area out (jewellery, a marker …):
  lesion pixels there are removed before measuring;
- a label-mask image (PNG/TIFF, same rows × columns as the film, 0 = no region, k = region
  k), with an optional name table ``STEM.regions.json`` beside it
  (``{"names": {"1": "thumb", ...}, "exclude": [3]}``); or a JSON file
  ``{"mask": "mask.png", "names": {...}, "exclude": [...]}`` whose mask path is relative to it.

Pixels covered by no region belong to the implicit region ``other``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from calcimage.errors import ParameterError
from calcimage.film import Film

__all__ = ["Regions", "OTHER", "whole_film", "grid_regions", "load_regions", "assign_lesions"]

logger = logging.getLogger(__name__)

#: Name of the implicit region holding pixels that no region covers.
OTHER = "other"
_GRID = re.compile(r"^\s*grid[\s:]*(\d+)\s*[xX×]\s*(\d+)\s*$")


@dataclass(frozen=True, eq=False)
class Regions:
    """Named regions of one film.

    Attributes
    ----------
    mask
        int32 (rows, cols): 0 = no region (``other``), k = ``names[k - 1]``.
    names
        Region names, in the order totals are reported.
    excluded
        bool (rows, cols): areas masked out of measurement.
    source
        Short description of where the regions came from (``"film"``, ``"grid 2x3"``, a path).
    """

    mask: np.ndarray
    names: tuple[str, ...]
    excluded: np.ndarray
    source: str = "film"

    def __post_init__(self) -> None:
        if self.mask.shape != self.excluded.shape:
            raise ParameterError(
                f"regions mask shape {self.mask.shape} differs from excluded shape "
                f"{self.excluded.shape}; build both for the same film"
            )
        if len(set(self.names)) != len(self.names):
            raise ParameterError(f"region names must be unique, got {list(self.names)}")

    @property
    def covers_film(self) -> bool:
        """True when every non-excluded pixel belongs to a named region."""
        if self.mask.size and self.mask.strides == (0,) * self.mask.ndim:  # one value (whole_film)
            return bool(self.mask.flat[0] > 0) or bool(np.all(self.excluded))
        return bool(np.all((self.mask > 0) | self.excluded))

    def describe(self) -> dict[str, Any]:
        """JSON-ready description recorded in the measurement's parameters."""
        return {
            "source": self.source,
            "names": list(self.names),
            "excluded_px": int(self.excluded.sum()),
        }


def whole_film(film: Film) -> Regions:
    """One region named ``film`` covering the whole film (read-only masks that take no memory:
    every measurement of a film without regions builds one)."""
    mask = np.broadcast_to(np.int32(1), film.shape)
    return Regions(mask, ("film",), np.broadcast_to(np.False_, film.shape), "film")


def grid_regions(film: Film, n_rows: int, n_cols: int) -> Regions:
    """``n_rows`` × ``n_cols`` equal cells named ``r{i}c{j}`` (1-based), raster order.

    Cell boundaries are at ``round(i * rows / n_rows)``, so every pixel lies in exactly one cell.
    """
    if n_rows < 1 or n_cols < 1:
        raise ParameterError(f"grid {n_rows}x{n_cols} is invalid: use at least 1x1, e.g. 'grid 2x3'")
    rows, cols = film.shape
    if n_rows > rows or n_cols > cols:
        raise ParameterError(
            f"grid {n_rows}x{n_cols} has more cells than the film has pixels ({rows}x{cols})"
        )
    row_idx = np.minimum((np.arange(rows) * n_rows) // rows, n_rows - 1)
    col_idx = np.minimum((np.arange(cols) * n_cols) // cols, n_cols - 1)
    mask = (row_idx[:, None] * n_cols + col_idx[None, :] + 1).astype(np.int32)
    names = tuple(f"r{i + 1}c{j + 1}" for i in range(n_rows) for j in range(n_cols))
    return Regions(mask, names, np.zeros(film.shape, bool), f"grid {n_rows}x{n_cols}")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ParameterError(f"{path}: cannot read regions file: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ParameterError(f"{path}: regions file is not valid JSON: {exc}") from None


def _polygon_regions(path: Path, data: Any, film: Film) -> Regions:
    if isinstance(data, list):
        data = {"regions": data}
    units = data.get("units", "px")
    if units not in ("px", "mm"):
        raise ParameterError(f"{path}: units={units!r} is invalid: use \"px\" or \"mm\"")
    if units == "mm" and film.spacing_mm is None:
        raise ParameterError(
            f"{path}: polygons are in mm but the film has no pixel spacing; give --spacing or "
            "write the polygons in px"
        )
    unknown = sorted(set(data) - {"units", "regions"})
    if unknown:
        raise ParameterError(f"{path}: unknown key {unknown[0]!r}; valid keys are units, regions")
    entries = data.get("regions")
    if not isinstance(entries, list) or not entries:
        raise ParameterError(f"{path}: 'regions' must be a non-empty list of named polygons")
    scale = (1.0, 1.0) if units == "px" else film.spacing_mm
    assert scale is not None
    mask = np.zeros(film.shape, np.int32)
    excluded = np.zeros(film.shape, np.uint8)
    names: list[str] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "polygon" not in entry:
            raise ParameterError(f"{path}: region #{i + 1} needs a 'polygon' list of [row, col]")
        bad = sorted(set(entry) - {"name", "polygon", "exclude"})
        if bad:
            raise ParameterError(
                f"{path}: region #{i + 1} has unknown key {bad[0]!r}; valid keys are name, "
                "polygon, exclude"
            )
        try:
            pts = np.asarray(entry["polygon"], dtype=float)
        except (TypeError, ValueError):
            pts = np.zeros((0,))
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3 or not np.all(np.isfinite(pts)):
            raise ParameterError(
                f"{path}: region #{i + 1} polygon must be >= 3 [row, col] pairs, got "
                f"{entry['polygon']!r}"
            )
        # OpenCV wants (x, y) = (col, row) in pixel units.
        xy = np.round(np.stack([pts[:, 1] / scale[1], pts[:, 0] / scale[0]], axis=1)).astype(np.int32)
        if entry.get("exclude", False):
            cv2.fillPoly(excluded, [xy], 1)
            continue
        name = str(entry.get("name", f"region{i + 1}"))
        if name in names or name == OTHER:
            raise ParameterError(f"{path}: region name {name!r} is used twice or reserved")
        names.append(name)
        layer = np.zeros(film.shape, np.uint8)
        cv2.fillPoly(layer, [xy], 1)
        mask[layer > 0] = len(names)
    if not names:
        # Only exclusions: the rest of the film is one region.
        mask[:] = 1
        names.append("film")
    return Regions(mask, tuple(names), excluded > 0, str(path))


def _mask_regions(path: Path, mask_path: Path, table: dict[str, Any], film: Film) -> Regions:
    img = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ParameterError(f"{mask_path}: cannot read the region label-mask image")
    if img.ndim != 2:
        raise ParameterError(f"{mask_path}: region label mask must be single-channel, got {img.shape}")
    if img.shape != film.shape:
        raise ParameterError(
            f"{mask_path}: region mask is {img.shape[0]}x{img.shape[1]} but the film is "
            f"{film.shape[0]}x{film.shape[1]}; draw it on the same pixel grid"
        )
    raw_names = table.get("names", {})
    if not isinstance(raw_names, dict):
        raise ParameterError(f"{path}: 'names' must map label values to names, e.g. {{\"1\": \"thumb\"}}")
    exclude = {int(v) for v in table.get("exclude", [])}
    values = [int(v) for v in np.unique(img) if v != 0]
    mask = np.zeros(film.shape, np.int32)
    names: list[str] = []
    excluded = np.zeros(film.shape, bool)
    for v in values:
        if v in exclude:
            excluded |= img == v
            continue
        names.append(str(raw_names.get(str(v), f"region{v}")))
        mask[img == v] = len(names)
    if not names:
        mask[:] = 1
        names.append("film")
    return Regions(mask, tuple(names), excluded, str(path))


def load_regions(spec: "str | Path | Regions | None", film: Film) -> Regions:
    """Build the regions of ``film`` from a spec string, a file, or pass ``Regions`` through.

    Parameters
    ----------
    spec
        ``None``/``""``/``"film"`` for the whole film, ``"grid RxC"``, a polygon JSON file,
        a label-mask image (PNG/TIFF) or a JSON file pointing at one (see the module doc).
    film
        The film the regions apply to (its shape and spacing).

    Raises
    ------
    ParameterError
        When the spec is not understood, the file is unreadable or does not fit the film.
    """
    if isinstance(spec, Regions):
        if spec.mask.shape != film.shape:
            raise ParameterError(
                f"regions are for a {spec.mask.shape} film but this film is {film.shape}"
            )
        return spec
    if spec is None or str(spec).strip() in ("", "film", "all"):
        return whole_film(film)
    text = str(spec)
    m = _GRID.match(text)
    if m and not Path(text).exists():
        return grid_regions(film, int(m.group(1)), int(m.group(2)))
    path = Path(text)
    if not path.is_file():
        raise ParameterError(
            f"regions {text!r} is neither a file nor 'grid RxC': give a regions JSON, a label-mask "
            "image, or e.g. 'grid 2x2'"
        )
    if path.suffix.lower() == ".json":
        data = _read_json(path)
        if isinstance(data, dict) and "mask" in data:
            return _mask_regions(path, path.parent / str(data["mask"]), data, film)
        if not isinstance(data, (dict, list)):
            raise ParameterError(f"{path}: regions JSON must be an object with 'regions'")
        return _polygon_regions(path, data, film)
    table_path = path.with_name(path.stem + ".regions.json")
    table = _read_json(table_path) if table_path.is_file() else {}
    return _mask_regions(path, path, table, film)


def assign_lesions(labels: np.ndarray, regions: Regions) -> list[str]:
    """Name of the region holding the largest part of each lesion.

    ``result[k - 1]`` is the region of label k (k = 1 .. labels.max()). Pixels in no region
    count towards ``other``; ties go to the region listed first (``other`` last).
    """
    n = int(labels.max()) if labels.size else 0
    if n == 0:
        return []
    n_reg = len(regions.names)
    sel = labels > 0
    # Region index 0 = other; stored after the named ones for tie-breaking.
    reg = regions.mask[sel].astype(np.int64)
    reg = np.where(reg == 0, n_reg + 1, reg)
    width = n_reg + 2
    counts = np.bincount(labels[sel].astype(np.int64) * width + reg, minlength=(n + 1) * width)
    counts = counts.reshape(n + 1, width)
    best = counts[1:, 1:].argmax(axis=1) + 1
    return [regions.names[b - 1] if b <= n_reg else OTHER for b in best]
