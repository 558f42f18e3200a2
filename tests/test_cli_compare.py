"""``calcimage compare``: output contract, patient check, exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from _cli_films import dicom_film, phantom_png
from calcimage.cli.app import app
from calcimage.report.tables import CHANGE_COLUMNS, CHANGE_KEYS, COMPARISON_KEYS, SUMMARY_KEYS

DESIGN_CHANGE_COLUMNS = ["baseline_id", "followup_id", "status", "area_baseline_mm2", "area_followup_mm2"]


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("pair")
    base = phantom_png(folder / "base.png", seed=1, date="2026-01-05")
    follow = phantom_png(folder / "follow.png", seed=1, followup=True, date="2026-04-06")
    return base, follow


@pytest.fixture(scope="module")
def compared(pair, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("cmp") / "out"
    return out, run("compare", *pair, "--out", out)


def test_compare_writes_the_contract(compared, pair) -> None:
    out, result = compared
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "changes.csv", "comparison.json", "overlay.png"]
    data = json.loads((out / "comparison.json").read_text())
    keys = list(data)
    assert keys[: len(COMPARISON_KEYS) - 3] == list(COMPARISON_KEYS[:-3])
    assert keys[-3:] == ["params", "provenance", "timestamp"]
    for side, path in (("baseline", pair[0]), ("followup", pair[1])):
        assert list(data[side]) == [k for k in SUMMARY_KEYS if k != "timestamp"]
        assert data[side]["input"] == str(path)
    assert {"matrix", "scale", "quality"} <= set(data["registration"])
    assert len(data["registration"]["matrix"]) == 2 and all(len(r) == 3 for r in data["registration"]["matrix"])
    assert set(CHANGE_KEYS) <= set(data["change"])
    assert data["category"] in ("progression", "stable", "regression")
    assert data["interval_days"] == 91
    assert data["lesions"] and all(
        lesion["status"] in ("new", "resolved", "grown", "shrunk", "stable") for lesion in data["lesions"])
    assert all(list(lesion)[:5] == DESIGN_CHANGE_COLUMNS for lesion in data["lesions"])
    assert data["params"]["compare"]["progression_pct"] == 25.0
    with open(out / "changes.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == list(CHANGE_COLUMNS) and rows[0][:5] == DESIGN_CHANGE_COLUMNS
    assert len(rows) - 1 == len(data["lesions"])
    overlay = cv2.imread(str(out / "overlay.png"), cv2.IMREAD_UNCHANGED)
    assert overlay.shape[0] == 400 and overlay.shape[1] > 800 and overlay.shape[2] == 3


def test_compare_prints_the_category(compared) -> None:
    _, result = compared
    data = json.loads((compared[0] / "comparison.json").read_text())
    assert f"category: {data['category']}" in result.stdout


def test_total_change_matches_the_two_summaries(compared) -> None:
    data = json.loads((compared[0] / "comparison.json").read_text())
    change = data["change"]
    base_area = data["baseline"]["total_area_mm2"]
    assert change["total_area_pct"] == pytest.approx(100 * change["total_area_mm2"] / base_area, abs=1e-3)
    assert change["lesion_count"] == data["followup"]["lesion_count"] - data["baseline"]["lesion_count"]


def test_different_patients_are_refused_unless_allowed(tmp_path: Path) -> None:
    base = phantom_png(tmp_path / "in" / "a.png", seed=1, patient_id="P01")
    follow = phantom_png(tmp_path / "in" / "b.png", seed=1, followup=True, patient_id="P02")
    result = run("compare", base, follow, "--out", tmp_path / "o1")
    assert result.exit_code == 2 and "patient" in result.stderr.lower()
    assert "Traceback" not in result.output
    result = run("compare", base, follow, "--out", tmp_path / "o2", "--allow-different-patients")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "o2" / "comparison.json").read_text())
    assert data["params"]["compare"]["allow_different_patients"] is True


def test_unreadable_followup_exits_2(pair, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    result = run("compare", pair[0], bad, "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "bad.png" in result.stderr


def test_compare_output_may_not_hold_an_input(pair) -> None:
    result = run("compare", pair[0], pair[1], "--out", pair[0].parent)
    assert result.exit_code == 2 and "input" in result.stderr


def test_dicom_out_writes_seg_and_sr(tmp_path: Path) -> None:
    base = dicom_film(tmp_path / "in" / "a.dcm", seed=5, date="20260105")
    follow = dicom_film(tmp_path / "in" / "b.dcm", seed=5, followup=True, date="20260406")
    result = run("compare", base, follow, "--out", tmp_path / "o", "--dicom-out")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "o").iterdir() if p.suffix == ".dcm")
    assert names == ["baseline.seg.dcm", "baseline.sr.dcm", "followup.seg.dcm", "followup.sr.dcm"]
    result = run("measure", base, "--out", tmp_path / "m", "--dicom-out")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "m" / "a").glob("*.dcm")) == ["calcinosis.seg.dcm", "calcinosis.sr.dcm"]
