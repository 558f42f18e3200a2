"""``calcimage measure``: output contract, exit codes, partial failures, config, workers, folders."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from _cli_films import PARAMS, outputs_text, phantom_png, write_png
from calcimage.cli.app import app
from calcimage.measure import LESION_COLUMNS
from calcimage.phantom import make_phantom
from calcimage.report.tables import REGION_KEYS, SUMMARY_KEYS

MM_COLUMNS = [c for c in LESION_COLUMNS if c.endswith("_mm") or c.endswith("_mm2")]


@pytest.fixture(autouse=True)
def _salt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALCIMAGE_SALT", "test-salt")


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("films")
    phantom_png(folder / "a.png", seed=1)
    phantom_png(folder / "sub" / "b.png", seed=5)
    phantom_png(folder / "sub" / "c.png", seed=1, followup=True)
    return folder


@pytest.fixture(scope="module")
def measured(films: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("res") / "out"
    result = run("measure", films / "a.png", "--out", out, "--workers", "1")
    return out, result


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_measure_writes_the_contract(measured, films: Path) -> None:
    out, result = measured
    assert result.exit_code == 0, result.output
    folder = out / "a"
    assert sorted(p.name for p in folder.iterdir()) == ["labels.png", "lesions.csv", "overlay.png", "summary.json"]
    with open(folder / "lesions.csv", encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split(",")
    assert header == list(LESION_COLUMNS)
    rows = read_csv(folder / "lesions.csv")
    summary = json.loads((folder / "summary.json").read_text())
    assert list(summary) == list(SUMMARY_KEYS)
    assert all(list(r) == list(REGION_KEYS) for r in summary["regions"])
    assert {"calcimage", "python", "numpy"} <= set(summary["provenance"])
    assert summary["lesion_count"] == len(rows) > 0
    assert summary["input"] == str(films / "a.png")
    assert summary["spacing_mm"] == [0.3, 0.3] and summary["spacing_source"] == "sidecar"
    assert summary["params"]["segment"]["min_area_mm2"] > 0
    assert abs(summary["total_area_mm2"] - sum(float(r["area_mm2"]) for r in rows)) < 1e-3
    labels = cv2.imread(str(folder / "labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint16 and labels.shape == (400, 400)
    assert sorted(np.unique(labels[labels > 0]).tolist()) == [int(r["lesion_id"]) for r in rows]
    for r in rows:  # label k holds exactly lesion k's area
        assert int((labels == int(r["lesion_id"])).sum()) == int(r["area_px"])
    overlay = cv2.imread(str(folder / "overlay.png"), cv2.IMREAD_UNCHANGED)
    assert overlay.shape == (400, 400, 3)
    assert not list(out.rglob("*.calcimage-tmp"))


def test_summary_table_is_printed(measured) -> None:
    _, result = measured
    assert "calcimage measure" in result.stdout and "a" in result.stdout


def test_without_spacing_mm_columns_are_empty(tmp_path: Path) -> None:
    # Rendered at the spacing segment assumes for films without one (0.2 mm), so the
    # film's sizes read right and lesions are found.
    phantom = make_phantom(1, dataclasses.replace(PARAMS, spacing_mm=0.2, rows=600, cols=600))
    pixels = np.clip(np.round(phantom.film.pixels), 0, 65535).astype(np.uint16)
    film = write_png(tmp_path / "in2" / "nospacing.png", pixels)
    result = run("measure", film, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    rows = read_csv(tmp_path / "out" / "nospacing" / "lesions.csv")
    assert rows and all(r[c] == "" for r in rows for c in MM_COLUMNS)
    assert all(r["area_px"] != "" for r in rows)
    summary = json.loads((tmp_path / "out" / "nospacing" / "summary.json").read_text())
    assert summary["spacing_mm"] is None and summary["spacing_source"] == "none"
    assert summary["total_area_mm2"] is None and summary["units"] == "px" and summary["note"]


def test_spacing_option_overrides_and_is_recorded(films: Path, tmp_path: Path) -> None:
    result = run("measure", films / "a.png", "--out", tmp_path / "o", "--spacing", "0.25")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "o" / "a" / "summary.json").read_text())
    assert summary["spacing_mm"] == [0.25, 0.25] and summary["spacing_source"] == "user"
    assert summary["params"]["options"] == {"spacing_mm": 0.25, "regions": None, "regions_sha256": None}


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_bad_spacing_exits_2(films: Path, tmp_path: Path, value: str) -> None:
    result = run("measure", films / "a.png", "--out", tmp_path / "o", "--spacing", value)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_single_bad_film_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "in" / "bad.dcm"
    bad.parent.mkdir()
    bad.write_bytes(b"\x00\x01not a dicom" * 50)
    result = run("measure", bad, "--out", tmp_path / "out")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("calcimage: error:") and "bad.dcm" in lines[0]
    assert "Traceback" not in result.output


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = run("measure", tmp_path / "nope.dcm", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "no such file" in result.stderr and "Traceback" not in result.stderr


def test_batch_with_a_bad_film_is_partial(films: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in["
    inputs.mkdir()
    # ".../in[/broken].png" would be a closing tag if the summary table took paths as rich markup
    (inputs / "broken].png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (inputs / "empty.dcm").write_bytes(b"")
    result = run("measure", films / "a.png", inputs, "--out", tmp_path / "out")
    assert result.exit_code == 3, result.output
    errors = read_csv(tmp_path / "out" / "errors.csv")
    assert sorted(Path(e["input"]).name for e in errors) == ["broken].png", "empty.dcm"]
    assert all(e["error"] and "\n" not in e["error"] for e in errors)
    assert (tmp_path / "out" / "a" / "summary.json").is_file()
    assert not (tmp_path / "out" / "broken").exists()
    assert f"{inputs}/broken].png" in result.stderr
    assert "failed" in result.stdout and "errors.csv" in result.stderr


def test_rerun_after_fixing_clears_errors_csv(films: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    bad = inputs / "x.png"
    bad.write_bytes(b"junk")
    assert run("measure", films / "a.png", bad, "--out", tmp_path / "out").exit_code == 3
    phantom_png(bad, seed=5)
    result = run("measure", films / "a.png", bad, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "out" / "errors.csv").exists()
    assert "reused" in result.stdout


def test_config_file_is_applied_and_recorded(films: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "params.toml"
    cfg.write_text("[segment]\nmin_area_mm2 = 4.5\n\n[compare]\nprogression_pct = 30.0\n")
    result = run("measure", films / "a.png", "--out", tmp_path / "o", "--config", cfg)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "o" / "a" / "summary.json").read_text())
    assert summary["params"]["segment"]["min_area_mm2"] == 4.5
    rows = read_csv(tmp_path / "o" / "a" / "lesions.csv")
    assert all(float(r["area_mm2"]) >= 4.5 for r in rows)


@pytest.mark.parametrize(
    ("text", "named"),
    [("[segment]\nmin_area_mmm2 = 1.0\n", "min_area_mmm2"), ("[segmnt]\nx = 1\n", "segmnt"),
     ("[segment]\nmin_area_mm2 = -1.0\n", "min_area_mm2"), ("not toml [", "TOML")],
)
def test_bad_config_exits_2_naming_the_key(films: Path, tmp_path: Path, text: str, named: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    result = run("measure", films / "a.png", "--out", tmp_path / "o", "--config", cfg)
    assert result.exit_code == 2
    assert named in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_workers_do_not_change_results(films: Path, tmp_path: Path) -> None:
    one = run("measure", films, "--out", tmp_path / "w1", "--workers", "1")
    two = run("measure", films, "--out", tmp_path / "w2", "--workers", "2")
    assert one.exit_code == 0, one.output
    assert two.exit_code == 0, two.output
    a, b = outputs_text(tmp_path / "w1"), outputs_text(tmp_path / "w2")
    assert sorted(a) == ["a/lesions.csv", "a/summary.json", "b/lesions.csv", "b/summary.json",
                         "c/lesions.csv", "c/summary.json"]
    for key in a:
        assert a[key].decode() == b[key].decode(), key
    for name in ("a", "b", "c"):
        for png in ("labels.png", "overlay.png"):
            assert (tmp_path / "w1" / name / png).read_bytes() == (tmp_path / "w2" / name / png).read_bytes()


def test_same_stem_in_two_folders_gets_two_output_folders(tmp_path: Path) -> None:
    phantom_png(tmp_path / "in" / "x" / "film.png", seed=1)
    phantom_png(tmp_path / "in" / "y" / "film.png", seed=5)
    result = run("measure", tmp_path / "in", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "film" / "summary.json").is_file()
    assert (tmp_path / "out" / "film_2" / "summary.json").is_file()


def test_output_inside_input_folder_is_refused(films: Path) -> None:
    result = run("measure", films, "--out", films / "results")
    assert result.exit_code == 2 and "inside the input folder" in result.stderr
    assert not (films / "results").exists()


def test_input_inside_output_folder_is_refused(tmp_path: Path) -> None:
    film = phantom_png(tmp_path / "out" / "a.png")
    result = run("measure", film, "--out", tmp_path / "out", "--force")
    assert result.exit_code == 2 and "inside the output folder" in result.stderr


def test_foreign_folder_needs_force(films: Path, tmp_path: Path) -> None:
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = run("measure", films / "a.png", "--out", out)
    assert result.exit_code == 2 and "--force" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    result = run("measure", films / "a.png", "--out", out, "--force")
    assert result.exit_code == 0, result.output
    assert (out / "notes.txt").read_text() == "mine" and (out / "a" / "summary.json").is_file()


def test_quiet_prints_nothing_on_success(films: Path, tmp_path: Path) -> None:
    result = run("--quiet", "measure", films / "a.png", "--out", tmp_path / "o")
    assert result.exit_code == 0 and result.stdout == ""


def test_exit_code_rules() -> None:
    from calcimage.cli._common import exit_code_for
    from calcimage.study import FilmResult

    bad = FilmResult(source="x", ok=False, error="x: file is empty")
    bug = FilmResult(source="y", ok=False, error="internal error: KeyError", internal=True)
    assert exit_code_for(3, []) == 0
    assert exit_code_for(2, [bad]) == 3
    assert exit_code_for(0, [bad]) == 2
    assert exit_code_for(0, [bad, bad]) == 2
    assert exit_code_for(2, [bad, bug]) == 1


def test_real_broken_films_are_listed_and_the_batch_continues(real_dir: Path, tmp_path: Path) -> None:
    names = ["CR1_6154_16x16_MONO1_rescale.dcm", "MR_truncated.dcm", "SC_rgb_small_odd.dcm"]
    result = run("measure", *(real_dir / n for n in names), "--out", tmp_path / "out", "--workers", "2")
    assert result.exit_code == 3, result.output
    errors = read_csv(tmp_path / "out" / "errors.csv")
    assert sorted(Path(e["input"]).name for e in errors) == names[1:]
    assert "truncated" in errors[0]["error"] and "colour" in errors[1]["error"]
    summary = json.loads((tmp_path / "out" / "CR1_6154_16x16_MONO1_rescale" / "summary.json").read_text())
    assert summary["spacing_source"] != "" and list(summary) == list(SUMMARY_KEYS)


def test_regions_option_is_applied_and_recorded(films: Path, tmp_path: Path) -> None:
    result = run("measure", films / "a.png", "--out", tmp_path / "grid", "--regions", "grid 2x2")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "grid" / "a" / "summary.json").read_text())
    assert [r["name"] for r in summary["regions"]][:4] == ["r1c1", "r1c2", "r2c1", "r2c2"]
    assert summary["params"]["options"]["regions"] == "grid 2x2"
    regions = tmp_path / "regions.json"
    regions.write_text(json.dumps({"units": "px", "regions": [
        {"name": "top", "polygon": [[0, 0], [0, 399], [199, 399], [199, 0]]}]}))
    result = run("measure", films / "a.png", "--out", tmp_path / "poly", "--regions", regions)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "poly" / "a" / "summary.json").read_text())
    assert summary["regions"][0]["name"] == "top"
    assert len(summary["params"]["options"]["regions_sha256"]) == 64
    result = run("measure", films / "a.png", "--out", tmp_path / "bad", "--regions", "grid 0x2")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_non_utf8_and_very_long_names(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    film = phantom_png(folder / "tmp.png", seed=5)
    os.rename(bytes(film), bytes(folder) + b"/\xff\xfefilm.png")
    os.rename(bytes(film.with_suffix(".json")), bytes(folder) + b"/\xff\xfefilm.json")
    long_name = "x" * 240 + ".png"
    phantom_png(folder / long_name, seed=1)
    (folder / "bad.dcm").write_bytes(b"junk")
    result = run("measure", folder, "--out", tmp_path / "out")
    assert result.exit_code == 3, result.output
    summary = json.loads((tmp_path / "out" / "film" / "summary.json").read_text(encoding="utf-8"))
    assert summary["input"].endswith("\udcff\udcfefilm.png") and summary["spacing_source"] == "sidecar"
    assert (tmp_path / "out" / ("x" * 64) / "summary.json").is_file()
    assert [Path(e["input"]).name for e in read_csv(tmp_path / "out" / "errors.csv")] == ["bad.dcm"]
