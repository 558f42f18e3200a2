"""``calcimage study``: layout, study.csv, report.html, privacy, resume after kill -9, workers."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from _cli_films import assert_same_results, dicom_film, outputs_text, phantom_png, write_study
from calcimage.cli.app import app
from calcimage.report.atomic import TMP_SUFFIX
from calcimage.report.tables import STUDY_COLUMNS

SALT = "study-test-salt"
IDENTIFIERS = (b"Doelittle", b"Janeway", b"19700101", b"Nowhere", b"PAT-", b"ALPHA", b"BRAVO", b"CHARLIE",
               b"film_2026")


@pytest.fixture(autouse=True)
def _salt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALCIMAGE_SALT", SALT)


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def study_in(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_study(tmp_path_factory.mktemp("study") / "in")
    dicom_film(folder / "PAT-CHARLIE-0003" / "IM0001", seed=5)  # no suffix: found by its DICM signature
    (folder / "PAT-CHARLIE-0003" / "notes.txt").write_text("not a film")
    return folder


@pytest.fixture(scope="module")
def studied(study_in: Path, tmp_path_factory: pytest.TempPathFactory):
    os.environ["CALCIMAGE_SALT"] = SALT  # module-scoped: the autouse fixture has not run yet
    out = tmp_path_factory.mktemp("res") / "out"
    result = run("study", study_in, "--out", out, "--workers", "1")
    return out, result


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_study_layout_and_table(studied) -> None:
    out, result = studied
    assert result.exit_code == 0, result.output
    rows = read_rows(out / "study.csv")
    with open(out / "study.csv", encoding="utf-8") as fh:
        assert fh.readline().rstrip("\n").split(",") == list(STUDY_COLUMNS)
    assert len(rows) == 5
    groups = sorted({r["group"] for r in rows})
    assert len(groups) == 3 and all(re.fullmatch(r"p-[0-9a-f]{12}_L_PA", g) for g in groups)
    for group in groups:
        members = [r for r in rows if r["group"] == group]
        assert members[0]["category"] == "baseline" and members[0]["change_pct"] == ""
        for follow in members[1:]:
            assert follow["months_since_baseline"] == "2.99" and follow["date"] == "2026-04-06"
            data = json.loads((out / group / f"compare_{follow['film']}" / "comparison.json").read_text())
            pct = data["change"]["total_area_pct"]  # None when the baseline has no lesion
            assert follow["change_pct"] == ("" if pct is None else repr(pct))
            assert follow["category"] == data["category"]
            assert data["baseline"]["input"] == f"{group}/{members[0]['film']}"
        for member in members:
            folder = out / group / member["film"]
            assert sorted(p.name for p in folder.iterdir()) == ["labels.png", "lesions.csv", "overlay.png", "summary.json"]
            summary = json.loads((folder / "summary.json").read_text())
            assert summary["lesion_count"] == int(member["lesion_count"])
            assert member["film"].startswith(member["date"] + "_") and summary["sha256"].startswith(member["film"][-8:])
    assert sum(1 for r in rows if r["category"] == "baseline") == 3


def test_report_html_is_self_contained(studied) -> None:
    out, _ = studied
    text = (out / "report.html").read_text(encoding="utf-8")
    outside_data = re.sub(r'"data:[^"]*"', '""', text)
    assert not re.search(r"https?:|ftp:|//[a-z]|url\(", outside_data)
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) == 5 + 2 and all(s.startswith("data:image/") for s in sources)
    assert text.count("<svg") == 3 and "stable band" in text
    assert "<link" not in text


def test_no_identifier_reaches_any_output(studied) -> None:
    out, result = studied
    for path in out.rglob("*"):
        rel = path.relative_to(out).as_posix().encode()
        assert not any(i in rel for i in IDENTIFIERS), rel
        if path.is_file():
            data = path.read_bytes()
            assert not any(i in data for i in IDENTIFIERS), (rel, [i for i in IDENTIFIERS if i in data])
    for stream in (result.stdout, result.stderr):
        assert not any(i.decode() in stream for i in IDENTIFIERS)


def test_rerun_reuses_everything(studied, study_in: Path) -> None:
    out, _ = studied
    before = outputs_text(out)
    result = run("study", study_in, "--out", out, "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "7 reused" in result.stdout
    assert outputs_text(out) == before


def test_another_salt_is_refused(studied, study_in: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, _ = studied
    monkeypatch.setenv("CALCIMAGE_SALT", "another")
    result = run("study", study_in, "--out", out)
    assert result.exit_code == 2 and "salt" in result.stderr


@pytest.fixture(scope="module")
def studied_w2(studied, study_in: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("w2") / "out"
    result = run("study", study_in, "--out", out, "--workers", "2")
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_workers_give_identical_results(studied, studied_w2: Path) -> None:
    # Byte-identical CSV/JSON (timestamps aside), comparisons included.
    assert_same_results(outputs_text(studied[0]), outputs_text(studied_w2))


def _complete(path: Path) -> None:
    """Raise unless ``path`` is a whole file of its kind."""
    if path.suffix == ".json":
        json.loads(path.read_text(encoding="utf-8"))
    elif path.suffix == ".csv":
        text = path.read_text(encoding="utf-8")
        assert text.endswith("\n")
        rows = list(csv.reader(text.splitlines()))
        assert len({len(r) for r in rows}) == 1
    elif path.suffix == ".png":
        assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is not None, path
    elif path.suffix == ".html":
        assert path.read_text(encoding="utf-8").rstrip().endswith("</html>")


@pytest.mark.slow
def test_killed_study_resumes_to_the_same_results(studied, study_in: Path, tmp_path: Path) -> None:
    out_ref, _ = studied
    out = tmp_path / "killed"
    env = dict(os.environ, CALCIMAGE_SALT=SALT)
    cmd = [sys.executable, "-c", "from calcimage.cli.app import main; main()", "-q", "study", str(study_in),
           "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:  # kill once the first film is finished, mid-way
            if len(list((out / ".calcimage" / "films").glob("*.json"))) >= 2:
                break
            if proc.poll() is not None:
                pytest.fail("study finished before it could be killed")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not (out / "study.csv").exists()
    for path in out.rglob("*"):
        if path.is_file() and not path.name.endswith(TMP_SUFFIX):
            _complete(path)
    result = run("study", study_in, "--out", out, "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "reused" in result.stdout
    assert not list(out.rglob(f"*{TMP_SUFFIX}"))
    assert_same_results(outputs_text(out_ref), outputs_text(out))


def test_bad_film_in_study_is_partial(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    phantom_png(folder / "a" / "x.png", seed=1, patient_id="Q1")
    (folder / "a" / "broken.dcm").write_bytes(os.urandom(300))
    result = run("study", folder, "--out", tmp_path / "out", "--workers", "1")
    assert result.exit_code == 3, result.output
    errors = read_rows(tmp_path / "out" / "errors.csv")
    assert [Path(e["input"]).name for e in errors] == ["broken.dcm"]
    assert len(read_rows(tmp_path / "out" / "study.csv")) == 1
    assert "failed" in (tmp_path / "out" / "report.html").read_text()


def test_keep_ids_sanitises_a_hostile_patient_id(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    out = tmp_path / "deep" / "out"
    phantom_png(folder / "a.png", seed=1, patient_id="../../etc", date="2026-01-05")
    phantom_png(folder / "b.png", seed=1, followup=True, patient_id="../../etc", date="2026-04-06")
    before = sorted([p.name for p in tmp_path.iterdir()] + ["deep"])
    result = run("study", folder, "--out", out, "--keep-ids", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "etc").exists() and not (tmp_path / "deep" / "etc").exists()
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["etc_L_PA"]
    rows = read_rows(out / "study.csv")
    assert {r["group"] for r in rows} == {"etc_L_PA"}
    summary = json.loads(next((out / "etc_L_PA").glob("2026-01-05_*/summary.json")).read_text())
    assert summary["input"] == "a.png"


def test_filename_convention_groups_films_without_metadata(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    for name, follow in (("Z9_R_AP_2026-01-05", False), ("Z9_R_AP_20260706", True)):
        film = phantom_png(folder / f"{name}.png", seed=1, followup=follow, patient_id=None, date=None,
                           laterality="", view="")
        sidecar = json.loads(film.with_suffix(".json").read_text())
        film.with_suffix(".json").write_text(json.dumps({"spacing_mm": sidecar["spacing_mm"]}))
    result = run("study", folder, "--out", tmp_path / "out", "--workers", "1")
    assert result.exit_code == 0, result.output
    rows = read_rows(tmp_path / "out" / "study.csv")
    assert len({r["group"] for r in rows}) == 1 and rows[0]["group"].endswith("_R_AP")
    assert [r["months_since_baseline"] for r in rows] == ["0.0", "5.98"]


def test_symlink_loop_is_harmless(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    phantom_png(folder / "a.png", seed=1)
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    result = run("study", folder, "--out", tmp_path / "out", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert len(read_rows(tmp_path / "out" / "study.csv")) == 1


def test_study_refusals(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    phantom_png(folder / "a.png", seed=1)
    result = run("study", folder, "--out", folder / "res")
    assert result.exit_code == 2 and not (folder / "res").exists()
    (tmp_path / "empty").mkdir()
    result = run("study", tmp_path / "empty", "--out", tmp_path / "o1")
    assert result.exit_code == 2 and "no films" in result.stderr
    result = run("study", folder / "a.png", "--out", tmp_path / "o2")
    assert result.exit_code == 2 and "not a folder" in result.stderr


@pytest.mark.slow
def test_readme_quickstart_study_on_sample_images(sample_dir: Path, tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "pip install . && calcimage study sample_images --out results\n" in readme
    result = run("study", sample_dir, "--out", tmp_path / "results")
    assert result.exit_code == 0, result.output
    rows = read_rows(tmp_path / "results" / "study.csv")
    films = sorted(p for p in sample_dir.iterdir() if p.suffix in (".dcm", ".png"))
    assert len(rows) == len(films) == 6
    assert sum(r["category"] == "baseline" for r in rows) == 2
    assert all(r["category"] in ("progression", "stable", "regression") for r in rows if r["category"] != "baseline")
    assert len(re.findall(r'src="data:image/', (tmp_path / "results" / "report.html").read_text())) == 6 + 4


def test_study_dicom_out_writes_tracked_objects_per_film(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    dicom_film(folder / "a.dcm", seed=5, date="20260105")
    dicom_film(folder / "b.dcm", seed=5, followup=True, date="20260406")
    result = run("study", folder, "--out", tmp_path / "out", "--dicom-out", "--workers", "1")
    assert result.exit_code == 0, result.output
    objects = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.dcm"))
    films = sorted({o.rsplit("/", 1)[0] for o in objects})
    assert len(films) == 2 and all(f.startswith("p-") for f in films)
    assert len(objects) == 4 and all(o.endswith(("calcinosis.seg.dcm", "calcinosis.sr.dcm")) for o in objects)


@pytest.mark.slow
def test_workers_import_the_installed_package_not_the_working_directory(tmp_path: Path) -> None:
    """Run from a source checkout with a regular (non-editable) install, as the README's
    quickstart does, the workers must not import ./calcimage: Python 3.11's fork server puts
    the working directory first on its sys.path."""
    import site
    import sysconfig
    import venv

    root = Path(__file__).resolve().parents[1]
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(root)],
                   check=True, capture_output=True, timeout=300)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    target = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip())
    (wheel,) = wheels.glob("calcimage-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # Dependencies from this environment, without its .pth files (an editable install's finder
    # would hide the problem).
    deps = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    (target / "zz_test_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    checkout = tmp_path / "checkout"
    (checkout / "calcimage").mkdir(parents=True)
    # An importable decoy, like a checkout's calcimage/ (which has no calcimage.cli).
    (checkout / "calcimage" / "__init__.py").write_text('DECOY = True\n')
    films = tmp_path / "films"
    phantom_png(films / "film_2026-01-05.png", seed=2, patient_id="P01", date="2026-01-05")
    env = dict(os.environ, CALCIMAGE_SALT=SALT)
    env.pop("PYTHONPATH", None)
    # A launcher like the console script: sys.path[0] is its folder, not the working directory.
    launcher = env_dir / "bin" / "calcimage_launcher.py"
    launcher.write_text('from calcimage.cli.app import main\n\nif __name__ == "__main__":\n    main()\n')
    proc = subprocess.run([str(py), str(launcher),
                           "-q", "study", str(films), "--out", str(tmp_path / "out"), "--workers", "1"],
                          cwd=checkout, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp_path / "out" / "errors.csv").exists()
    assert len(list((tmp_path / "out").rglob("lesions.csv"))) == 1
