"""Writing results to disk: the files of the design's output contract.

``write_measurement`` and ``write_comparison`` write a film's or a pair's folder; the
pieces live in :mod:`~calcimage.report.tables` (CSV/JSON), :mod:`~calcimage.report.overlay`
(PNGs), :mod:`~calcimage.report.html` (report.html) and :mod:`~calcimage.report.atomic`
(crash-safe writes, used by every writer).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from calcimage.measure import Measurement

__all__ = ["write_measurement", "write_comparison", "MEASURE_FILES", "COMPARE_FILES"]

#: Files written per measured film, in the order they are written (summary.json last).
MEASURE_FILES: tuple[str, ...] = ("labels.png", "lesions.csv", "overlay.png", "summary.json")
#: Files written per compared pair, in the order they are written (comparison.json last).
COMPARE_FILES: tuple[str, ...] = ("changes.csv", "overlay.png", "comparison.json")


def write_measurement(
    folder: str | Path,
    measurement: Measurement,
    *,
    input_name: str,
    extra_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write labels.png, lesions.csv, overlay.png and summary.json of one film into ``folder``.

    Returns the summary dict written to summary.json.
    """
    from calcimage.report import overlay, tables

    folder = Path(folder)
    overlay.write_labels_png(folder / "labels.png", measurement.labels)
    tables.write_lesions_csv(folder / "lesions.csv", measurement)
    overlay.write_png(folder / "overlay.png", overlay.measure_overlay(measurement))
    summary = tables.summary_dict(measurement, input_name=input_name, extra_params=extra_params)
    tables.write_summary_json(folder / "summary.json", summary)
    return summary


def write_comparison(
    folder: str | Path,
    comparison: Any,
    *,
    baseline_name: str,
    followup_name: str,
    extra_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write changes.csv, overlay.png and comparison.json of a compared pair into ``folder``.

    Returns the dict written to comparison.json.
    """
    from calcimage.report import overlay, tables

    folder = Path(folder)
    tables.write_changes_csv(folder / "changes.csv", comparison)
    overlay.write_png(folder / "overlay.png", overlay.comparison_overlay(comparison))
    data = tables.comparison_dict(
        comparison, baseline_name=baseline_name, followup_name=followup_name, extra_params=extra_params
    )
    tables.write_comparison_json(folder / "comparison.json", data)
    return data
