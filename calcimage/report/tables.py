"""Tabular and JSON outputs: lesions.csv, summary.json, comparison.json, changes.csv,
study.csv and errors.csv (the design's output contract; docs/outputs.md describes each field).

Every writer goes through :mod:`calcimage.report.atomic`. Numbers are written the same way
every time (floats rounded to 6 decimals, keys in a fixed order), so the same inputs and
parameters give byte-identical files; only the ``timestamp`` field differs between runs.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import enum
import io
import json
import math
import platform
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

import numpy as np

from calcimage.measure import LESION_COLUMNS, Measurement
from calcimage.params import params_hash, params_to_dict
from calcimage.report.atomic import write_text

__all__ = [
    "SUMMARY_KEYS",
    "REGION_KEYS",
    "COMPARISON_KEYS",
    "CHANGE_KEYS",
    "CHANGE_COLUMNS",
    "CHANGE_CONTRACT",
    "STUDY_COLUMNS",
    "ERROR_COLUMNS",
    "provenance",
    "timestamp",
    "lesion_rows",
    "summary_dict",
    "comparison_dict",
    "csv_text",
    "json_text",
    "write_lesions_csv",
    "write_summary_json",
    "write_comparison_json",
    "write_changes_csv",
    "write_study_csv",
    "write_errors_csv",
]

#: Keys of summary.json, in order.
SUMMARY_KEYS: tuple[str, ...] = (
    "input", "sha256", "spacing_mm", "spacing_source", "lesion_count", "total_area_mm2",
    "total_area_px", "total_burden", "units", "note", "regions", "params", "provenance", "timestamp",
)
#: Keys of each entry of summary.json's "regions".
REGION_KEYS: tuple[str, ...] = ("name", "lesion_count", "area_mm2", "burden")
#: Keys of comparison.json, in order.
COMPARISON_KEYS: tuple[str, ...] = (
    "baseline", "followup", "registration", "interval_days", "change", "category", "lesions",
    "regions", "params", "provenance", "timestamp",
)
#: Keys of comparison.json's "change".
CHANGE_KEYS: tuple[str, ...] = ("total_area_mm2", "total_area_pct", "lesion_count", "total_burden_pct")
#: The design's contract for the first columns of changes.csv.
CHANGE_CONTRACT: tuple[str, ...] = (
    "baseline_id", "followup_id", "status", "area_baseline_mm2", "area_followup_mm2",
)


def _change_columns() -> tuple[str, ...]:
    # changes.csv carries every figure LesionChange.to_dict reports, the contract's first.
    from calcimage.compare import LesionChange, Status

    keys = tuple(LesionChange(None, None, Status.NEW, None, None).to_dict())
    return CHANGE_CONTRACT + tuple(k for k in keys if k not in CHANGE_CONTRACT)


#: Columns of changes.csv (and keys of comparison.json's "lesions" entries).
CHANGE_COLUMNS: tuple[str, ...] = _change_columns()
#: Columns of study.csv.
STUDY_COLUMNS: tuple[str, ...] = (
    "group", "film", "date", "months_since_baseline", "lesion_count", "total_area_mm2",
    "total_area_px", "total_burden", "change_pct", "category",
)
#: Columns of errors.csv.
ERROR_COLUMNS: tuple[str, ...] = ("input", "error")

_DECIMALS = 6


def _plain(value: Any) -> Any:
    """JSON-ready, deterministic value: enums by value, floats rounded, non-finite -> None."""
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        rounded = round(value, _DECIMALS)
        return 0.0 if rounded == 0 else rounded  # no "-0.0"
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def _cell(value: Any) -> str:
    """One CSV cell: empty for None, enums by value, floats as rounded reprs."""
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def csv_text(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV with a header row, ``\\n`` line ends and cells formatted by one rule."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buf.getvalue()


def json_text(data: Mapping[str, Any]) -> str:
    """Indented JSON in key insertion order, ending with a newline."""
    return json.dumps(_plain(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _version(dist: str) -> str | None:
    try:
        return _metadata.version(dist)
    except _metadata.PackageNotFoundError:
        return None


def provenance(*params: Any) -> dict[str, Any]:
    """Versions of calcimage, Python and the libraries that shape the numbers, and the
    parameter hash of ``params`` (the ``*Params`` dataclasses used)."""
    import calcimage

    info: dict[str, Any] = {
        "calcimage": calcimage.__version__,
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "scipy": _version("scipy"),
        "scikit-image": _version("scikit-image"),
        "opencv": _version("opencv-python-headless") or _version("opencv-python"),
        "pydicom": _version("pydicom"),
        "platform": platform.system().lower() + "-" + platform.machine(),
    }
    if params:
        info["params_hash"] = params_hash(*params)
    from calcimage.candidates import model_digest

    from calcimage.pixels import pixel_model_digest

    for p in params:
        if getattr(p, "min_score", 0) > 0:  # segmentation scored its candidates: which model
            info["candidate_model"] = model_digest(p.score_model)
            break
    for p in params:
        if getattr(p, "pixel_min_prob", 0) > 0:  # segmentation ran the pixel model (its step 9)
            info["pixel_model"] = pixel_model_digest(p.pixel_model)
            break
    return info


def timestamp() -> str:
    """Current UTC time, ISO 8601 to the second (the one field that differs between runs)."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def lesion_rows(measurement: Measurement) -> list[dict[str, Any]]:
    """One dict per lesion with the keys of :data:`calcimage.measure.LESION_COLUMNS`."""
    rows = []
    for lesion in measurement.lesions:
        rows.append({c: getattr(lesion, c) for c in LESION_COLUMNS})
    return rows


def _params_of(measurement: Measurement) -> dict[str, Any]:
    params = dict(measurement.params or {})
    if "segment" not in params:
        params = {"segment": params_to_dict(measurement.segmentation.params), "measure": params}
    return params


def summary_dict(
    measurement: Measurement,
    *,
    input_name: str,
    extra_params: Mapping[str, Any] | None = None,
    with_timestamp: bool = True,
) -> dict[str, Any]:
    """summary.json of one measured film (keys :data:`SUMMARY_KEYS`).

    Parameters
    ----------
    measurement
        The result of :func:`calcimage.measure`.
    input_name
        What to record as ``input`` (the path as given, or a pseudonymous film id).
    extra_params
        Run settings to record beside the stage parameters (e.g. ``spacing_mm`` given by
        the user, the regions file).
    with_timestamp
        Include ``timestamp`` (left out where the summary is nested in comparison.json).
    """
    film = measurement.film
    params = _params_of(measurement)
    if extra_params:
        params.update(extra_params)
    data: dict[str, Any] = {
        "input": input_name,
        "sha256": film.sha256,
        "spacing_mm": list(film.spacing_mm) if film.spacing_mm is not None else None,
        "spacing_source": film.spacing_source.value,
        "lesion_count": measurement.lesion_count,
        "total_area_mm2": measurement.total_area_mm2,
        "total_area_px": measurement.total_area_px,
        "total_burden": measurement.total_burden,
        "units": getattr(measurement, "units", "mm" if film.spacing_mm is not None else "px"),
        "note": getattr(measurement, "note", ""),
        "regions": [
            {"name": r.name, "lesion_count": r.lesion_count, "area_mm2": r.area_mm2, "burden": r.burden}
            for r in measurement.regions
        ],
        "params": params,
        "provenance": provenance(measurement.segmentation.params),
    }
    if with_timestamp:
        data["timestamp"] = timestamp()
    return _plain(data)


def comparison_dict(
    comparison: Any,
    *,
    baseline_name: str,
    followup_name: str,
    extra_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """comparison.json of a :class:`calcimage.compare.Comparison` (keys :data:`COMPARISON_KEYS`
    first, then any further figures the comparison reports, e.g. ``interval_months``)."""
    body = dict(comparison.to_dict())
    params = {"compare": body.pop("params", params_to_dict(comparison.params))}
    if extra_params:
        params.update(extra_params)
    data: dict[str, Any] = {
        "baseline": summary_dict(
            comparison.baseline, input_name=baseline_name, extra_params=extra_params, with_timestamp=False
        ),
        "followup": summary_dict(
            comparison.followup, input_name=followup_name, extra_params=extra_params, with_timestamp=False
        ),
    }
    for key in COMPARISON_KEYS[2:]:
        if key in body:
            data[key] = body.pop(key)
    data.update(body)
    data["params"] = params
    data["provenance"] = provenance(comparison.baseline.segmentation.params, comparison.params)
    data["timestamp"] = timestamp()
    return _plain(data)


def write_lesions_csv(path: str | Path, measurement: Measurement) -> None:
    """Write lesions.csv (columns :data:`calcimage.measure.LESION_COLUMNS`)."""
    write_text(path, csv_text(LESION_COLUMNS, lesion_rows(measurement)))


def write_summary_json(path: str | Path, summary: Mapping[str, Any]) -> None:
    """Write a summary dict from :func:`summary_dict`."""
    write_text(path, json_text(summary))


def write_comparison_json(path: str | Path, comparison: Mapping[str, Any]) -> None:
    """Write a comparison dict from :func:`comparison_dict`."""
    write_text(path, json_text(comparison))


def write_changes_csv(path: str | Path, comparison: Any) -> None:
    """Write changes.csv: one row per matched, new or resolved lesion (:data:`CHANGE_COLUMNS`)."""
    rows = [ch.to_dict() for ch in comparison.lesions]
    write_text(path, csv_text(CHANGE_COLUMNS, rows))


def write_study_csv(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write study.csv (:data:`STUDY_COLUMNS`), one row per film."""
    write_text(path, csv_text(STUDY_COLUMNS, rows))


def write_errors_csv(path: str | Path, errors: Iterable[tuple[str, str]]) -> None:
    """Write errors.csv: one row per input that failed, with its one-line error."""
    write_text(path, csv_text(ERROR_COLUMNS, ({"input": i, "error": e} for i, e in errors)))
