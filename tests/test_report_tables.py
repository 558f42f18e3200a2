"""calcimage.report.tables: exact CSV/JSON text from hand-built results."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from _report_builders import make_comparison, make_measurement
from calcimage.compare import LesionChange, Status
from calcimage.measure import LESION_COLUMNS
from calcimage.report import write_comparison, write_measurement
from calcimage.report.tables import (
    CHANGE_COLUMNS,
    COMPARISON_KEYS,
    REGION_KEYS,
    STUDY_COLUMNS,
    SUMMARY_KEYS,
    csv_text,
    json_text,
    summary_dict,
    write_errors_csv,
    write_lesions_csv,
    write_study_csv,
)


def test_lesions_csv_exact_text(tmp_path: Path) -> None:
    write_lesions_csv(tmp_path / "l.csv", make_measurement(0.1))
    assert (tmp_path / "l.csv").read_text() == (
        ",".join(LESION_COLUMNS) + "\n"
        "1,whole,nodule,0.35,35,7.0,8.0,0.668,0.75,0.51,2.2,0.71,1.0,3000.0,3000.0,3,1.05\n"
        "2,whole,plaque,0.9,90,21.0,24.5,1.07,3.0,0.3,6.4,0.99,1.0,2500.0,2500.0,2,1.8\n"
    )


def test_lesions_csv_without_spacing_leaves_mm_empty(tmp_path: Path) -> None:
    write_lesions_csv(tmp_path / "l.csv", make_measurement(None))
    rows = list(csv.DictReader(io.StringIO((tmp_path / "l.csv").read_text())))
    mm = [c for c in LESION_COLUMNS if "_mm" in c]
    assert mm == ["area_mm2", "equivalent_diameter_mm", "major_axis_mm", "minor_axis_mm", "perimeter_mm"]
    assert all(r[c] == "" for r in rows for c in mm)
    assert [r["area_px"] for r in rows] == ["35", "90"] and [r["burden"] for r in rows] == ["105", "180"]


@pytest.mark.parametrize("spacing", [0.1, None])
def test_summary_keys_and_values(spacing: float | None) -> None:
    s = summary_dict(make_measurement(spacing), input_name="in/a.png", extra_params={"regions": None})
    assert list(s) == list(SUMMARY_KEYS)
    assert s["input"] == "in/a.png" and s["sha256"] == "ab" * 32
    assert s["lesion_count"] == 2 and s["total_area_px"] == 125
    assert s["regions"] == [{"name": "whole", "lesion_count": 2, "area_mm2": 1.25 if spacing else None,
                             "burden": 2.85 if spacing else 285}]
    assert all(list(r) == list(REGION_KEYS) for r in s["regions"])
    if spacing:
        assert s["spacing_mm"] == [0.1, 0.1] and s["total_area_mm2"] == 1.25 and s["spacing_source"] == "user"
    else:
        assert s["spacing_mm"] is None and s["total_area_mm2"] is None and s["spacing_source"] == "none"
    assert s["params"]["segment"] == {"method": "auto", "min_area_mm2": 1.0} or "method" in s["params"]["segment"]
    assert s["params"]["regions"] is None
    assert {"calcimage", "python", "numpy", "params_hash"} <= set(s["provenance"])
    from calcimage.candidates import model_digest  # the model file is part of the parameters

    assert s["provenance"]["candidate_model"] == model_digest() and len(model_digest()) == 16
    assert s["timestamp"].endswith("Z")


def test_writes_are_byte_identical_apart_from_the_timestamp(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_measurement(tmp_path / name, make_measurement(0.1), input_name="x")
        write_comparison(tmp_path / name / "cmp", make_comparison(), baseline_name="x", followup_name="y")
    for rel in ("lesions.csv", "labels.png", "overlay.png", "cmp/changes.csv", "cmp/overlay.png"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    for rel in ("summary.json", "cmp/comparison.json"):
        a = json.loads((tmp_path / "a" / rel).read_text())
        b = json.loads((tmp_path / "b" / rel).read_text())
        a.pop("timestamp"), b.pop("timestamp")
        assert a == b


def test_comparison_json_and_changes_csv(tmp_path: Path) -> None:
    data = write_comparison(tmp_path, make_comparison(), baseline_name="b.png", followup_name="f.png")
    on_disk = json.loads((tmp_path / "comparison.json").read_text())
    assert on_disk["category"] == "stable" and on_disk["interval_days"] == 91
    keys = list(on_disk)
    assert [k for k in keys if k in COMPARISON_KEYS] == list(COMPARISON_KEYS)
    assert on_disk["baseline"]["input"] == "b.png" and "timestamp" not in on_disk["baseline"]
    assert on_disk["registration"]["matrix"] == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    assert on_disk["change"]["total_area_pct"] == 0.0
    assert [l["status"] for l in on_disk["lesions"]] == ["stable", "resolved", "new"]
    assert on_disk["params"]["compare"]["progression_pct"] == 25.0
    text = (tmp_path / "changes.csv").read_text().splitlines()
    assert text[0] == ",".join(CHANGE_COLUMNS)
    assert [line.split(",")[:5] for line in text[1:]] == [
        ["1", "1", "stable", "0.35", "0.35"], ["2", "", "resolved", "0.9", ""], ["", "2", "new", "", "0.9"]]
    assert data["category"] == "stable"


def test_change_columns_follow_lesion_change_to_dict() -> None:
    row = LesionChange(1, 2, Status.GROWN, 1.0, 2.0).to_dict()
    assert tuple(row) == CHANGE_COLUMNS
    assert CHANGE_COLUMNS[:5] == ("baseline_id", "followup_id", "status", "area_baseline_mm2", "area_followup_mm2")


def test_json_is_strict_and_plain() -> None:
    text = json_text({"a": float("nan"), "b": np.float32(0.1), "c": np.int64(3), "d": -0.0, "e": (1, 2),
                      "f": Status.NEW, "g": 1.23456789})
    assert json.loads(text) == {"a": None, "b": 0.1, "c": 3, "d": 0.0, "e": [1, 2], "f": "new", "g": 1.234568}
    assert "NaN" not in text and text.endswith("\n")


def test_csv_cells() -> None:
    text = csv_text(("a", "b", "c", "d"), [{"a": None, "b": True, "c": 'x,"y"', "d": math.inf}])
    assert text == 'a,b,c,d\n,true,"x,""y""",\n'


def test_study_and_errors_csv(tmp_path: Path) -> None:
    write_study_csv(tmp_path / "s.csv", [{"group": "g", "film": "f", "date": "2026-01-05", "lesion_count": 3,
                                         "months_since_baseline": 0.0, "category": "baseline"}])
    assert (tmp_path / "s.csv").read_text() == ",".join(STUDY_COLUMNS) + "\ng,f,2026-01-05,0.0,3,,,,,baseline\n"
    write_errors_csv(tmp_path / "e.csv", [("a.dcm", "a.dcm: file is empty (0 bytes)")])
    assert (tmp_path / "e.csv").read_text() == "input,error\na.dcm,a.dcm: file is empty (0 bytes)\n"
