#!/usr/bin/env python
"""Speed and memory benchmark for calcimage (issue 7). A script, not a test.

One command (from the repository root)::

    .venv/bin/python benchmarks/speed.py            # full run, see docs/performance.md
    .venv/bin/python benchmarks/speed.py --quick    # smoke run on a small film

What it does
------------
1. Writes a 12-bit, 0.1 mm phantom film (``calcimage.phantom``) of ``--rows`` x ``--cols``
   as uncompressed DICOM and as JPEG 2000 lossless DICOM, plus a follow-up film of the same
   size, into a cache folder (default ``benchmarks/out/cache``, gitignored; regenerated when
   the size, seed or ``calcimage/phantom.py`` change).
2. Times each stage in-process: one warm-up, then ``--runs`` runs; reports the median (and
   min/max) with the 1-minute load average before and after, because other work on the
   machine inflates timings.
3. Measures each stage's peak memory in a fresh subprocess: the child loads its inputs,
   resets its peak-RSS counter (``/proc/self/clear_refs``), runs the stage once and reports
   ``VmHWM`` from ``/proc/self/status``. This is the whole process's resident peak (Python
   objects *and* native buffers such as OpenCV/NumPy arrays and the decoder's), including
   the interpreter and imported libraries. ``ru_maxrss`` from ``os.wait4`` is recorded too.
4. Runs the real CLI (``calcimage study``) on ``--study-films`` films with ``--workers 1``
   and ``--workers 2`` and reports films per minute; the peak RSS there is the largest
   single process (CLI or one worker), which is the per-worker figure.
5. Prints a Markdown table and writes everything to ``--out`` as JSON.

Stages that have not landed in the library yet (``NotImplementedError``, missing module or
function) are reported as unavailable instead of failing the run.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import gc
import hashlib
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "out" / "speed.json"
DEFAULT_CACHE = ROOT / "benchmarks" / "out" / "cache"

#: Full-size film of the issue: 3000 rows x 3500 columns at 0.1 mm (30 x 35 cm, a hand/forearm
#: cassette), 12 bits stored.
FULL_ROWS, FULL_COLS = 3000, 3500
QUICK_ROWS, QUICK_COLS = 1000, 1200  # the phantom limb (<= 85 mm) must fit in 80 % of the width
SPACING_MM = 0.1
BITS_STORED = 12

#: Stages timed in-process, in table order. Keys of ``STAGE_INFO`` are stage names.
STAGE_INFO: dict[str, str] = {
    "decode": "pydicom dcmread(...).pixel_array, uncompressed",
    "decode_j2k": "pydicom dcmread(...).pixel_array, JPEG 2000 lossless",
    "textbook": "decode + Otsu on whole film + skimage label + regionprops areas",
    "textbook_j2k": "same, JPEG 2000 lossless input",
    "measure": "calcimage load + segment + measure (no writing)",
    "measure_j2k": "same, JPEG 2000 lossless input",
    "measure_write": "load + segment + measure + write outputs",
    "compare_measured": "calcimage compare, both films already measured (lean measurements, as the CLI holds them)",
    "compare_scratch": "load + segment + measure both films (each kept lean) + compare",
}

#: Issue 7 targets.
TARGET_MEASURE_S = 1.0
TARGET_MEASURE_OVER_TEXTBOOK = 2.0
TARGET_MEASURE_OVER_DECODE = 12.0
TARGET_COMPARE_S = 2.0
TARGET_PEAK_MB = 600.0
TARGET_WORKERS_SPEEDUP = 1.7


class Unavailable(Exception):
    """A stage cannot run because the library part it needs has not landed (or is broken)."""


# --------------------------------------------------------------------------------------------
# machine and load


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, OS and library versions, git commit."""
    cpu = "unknown"
    flags_line = ""
    for line in _read_text("/proc/cpuinfo").splitlines():
        if line.startswith("model name") and cpu == "unknown":
            cpu = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags_line:
            flags_line = line
    mem_kb = 0
    for line in _read_text("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    versions: dict[str, str] = {"python": platform.python_version()}
    for mod in ("numpy", "cv2", "pydicom", "skimage", "scipy", "calcimage"):
        try:
            versions["opencv" if mod == "cv2" else mod] = str(__import__(mod).__version__)
        except Exception as exc:  # report, do not fail
            versions[mod] = f"unavailable ({type(exc).__name__})"
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "calcimage", "cli"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        commit += " (+ uncommitted library changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    try:
        import cv2

        cv_threads = cv2.getNumThreads()
    except Exception:
        cv_threads = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "avx2": " avx2" in flags_line,
        "ram_gb": round(mem_kb / 1024**2, 1),
        "os": platform.platform(),
        "versions": versions,
        "opencv_threads": cv_threads,
        "git_commit": commit,
    }


def loadavg() -> float:
    """1-minute load average."""
    return round(os.getloadavg()[0], 2)


# --------------------------------------------------------------------------------------------
# inputs


def _phantom_source_hash() -> str:
    src = ROOT / "calcimage" / "phantom.py"
    return hashlib.sha256(src.read_bytes()).hexdigest()[:12] if src.exists() else "none"


def _phantom():
    try:
        from calcimage import phantom
    except ImportError as exc:
        raise Unavailable(f"calcimage.phantom not importable ({exc})") from None
    return phantom


def make_film(*, rows: int, cols: int, seed: int, followup_of: Any = None) -> Any:
    """A phantom (``calcimage.phantom.Phantom``) or a follow-up of ``followup_of``."""
    phantom = _phantom()
    if followup_of is not None:
        return phantom.make_followup(followup_of, seed=seed + 1)
    params = phantom.PhantomParams(rows=rows, cols=cols, spacing_mm=SPACING_MM, bits_stored=BITS_STORED)
    return phantom.make_phantom(seed, params)


def write_film(ph: Any, path: Path, *, transfer_syntax: str, patient_id: str = "BENCH01",
               study_date: dt.date = dt.date(2026, 1, 5)) -> None:
    """Write a phantom as DX DICOM (``calcimage.phantom.write_dicom`` writes atomically)."""
    _phantom().write_dicom(ph, path, transfer_syntax=transfer_syntax, patient_id=patient_id,
                           study_date=study_date)


def _prune_stale(cache: Path, stem: str, keep: Path) -> None:
    """Delete cached film sets of the same size and seed made by an older phantom.py."""
    for old in cache.glob(stem + "_*"):
        if old != keep and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def prepare_inputs(cache: Path, rows: int, cols: int, seed: int) -> dict[str, Path]:
    """Phantom film (uncompressed + J2K lossless) and a follow-up, cached by size/seed/source."""
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

    stem = f"film_{rows}x{cols}_s{seed}"
    folder = cache / f"{stem}_{_phantom_source_hash()}"
    paths = {
        "uncompressed": folder / "baseline.dcm",
        "j2k": folder / "baseline_j2k.dcm",
        "followup": folder / "followup.dcm",
    }
    if all(p.exists() for p in paths.values()):
        return paths
    _prune_stale(cache, stem, folder)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = make_film(rows=rows, cols=cols, seed=seed)
    write_film(base, paths["uncompressed"], transfer_syntax=ExplicitVRLittleEndian)
    write_film(base, paths["j2k"], transfer_syntax=JPEG2000Lossless)
    follow = make_film(rows=rows, cols=cols, seed=seed, followup_of=base)
    write_film(follow, paths["followup"], transfer_syntax=ExplicitVRLittleEndian, study_date=dt.date(2026, 4, 6))
    print(f"  wrote phantom films to {folder} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return paths


def prepare_study(cache: Path, n_films: int, rows: int, cols: int, seed: int) -> Path:
    """``n_films`` films: n/2 patients with a baseline and a 3-month follow-up each."""
    from pydicom.uid import ExplicitVRLittleEndian

    stem = f"study_{n_films}_{rows}x{cols}_s{seed}"
    folder = cache / f"{stem}_{_phantom_source_hash()}"
    done = folder / ".complete"
    if done.exists():
        return folder
    _prune_stale(cache, stem, folder)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i in range(n_films // 2):
        pid = f"BENCH{i + 1:03d}"
        base = make_film(rows=rows, cols=cols, seed=seed + 100 * i)
        write_film(base, folder / f"{pid}_base.dcm", transfer_syntax=ExplicitVRLittleEndian, patient_id=pid,
                   study_date=dt.date(2026, 1, 5))
        follow = make_film(rows=rows, cols=cols, seed=seed + 100 * i, followup_of=base)
        write_film(follow, folder / f"{pid}_fu3m.dcm", transfer_syntax=ExplicitVRLittleEndian, patient_id=pid,
                   study_date=dt.date(2026, 4, 6))
    done.write_text("ok\n")
    print(f"  wrote {n_films} study films to {folder} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return folder


# --------------------------------------------------------------------------------------------
# stages


def textbook_pipeline(path: Path, spacing_mm: float = SPACING_MM) -> list[float]:
    """What a researcher writes in ten lines: Otsu on the whole film, label, regionprops areas."""
    import pydicom
    import skimage.filters
    import skimage.measure

    img = pydicom.dcmread(path).pixel_array.astype(np.float32)
    threshold = skimage.filters.threshold_otsu(img)
    labels = skimage.measure.label(img > threshold)
    return [r.area * spacing_mm**2 for r in skimage.measure.regionprops(labels)]


def _measure_file(path: Path) -> Any:
    import calcimage

    film = calcimage.load(path)
    seg = calcimage.segment(film)
    return calcimage.measure(film, seg)


def _write_outputs(m: Any, out_dir: Path) -> None:
    """Write the per-film outputs with the report writers (contract: labels, CSV, JSON, overlay)."""
    try:
        from calcimage import report
    except ImportError as exc:
        raise Unavailable(f"calcimage.report not importable ({exc})") from None
    writer = getattr(report, "write_measurement", None)
    if writer is None:
        raise Unavailable("calcimage.report has no write_measurement() yet")
    writer(out_dir, m, input_name=m.film.path.name if m.film.path else "film")


def make_stage(name: str, paths: dict[str, Path], workdir: Path) -> Callable[[], Any]:
    """Return a no-argument callable running stage ``name``; setup (e.g. measuring the pair
    for ``compare_measured``) happens here, outside the timed call."""
    import pydicom

    import calcimage

    j2k = name.endswith("_j2k")
    film_path = paths["j2k"] if j2k else paths["uncompressed"]
    base = name.removesuffix("_j2k")
    if base == "decode":
        return lambda: pydicom.dcmread(film_path).pixel_array
    if base == "textbook":
        return lambda: textbook_pipeline(film_path)
    if base == "measure":
        return lambda: _measure_file(film_path)
    if base == "measure_write":
        counter = iter(range(10**9))

        def run() -> Any:
            m = _measure_file(film_path)
            out = workdir / f"measure_write_{next(counter)}"
            _write_outputs(m, out)
            shutil.rmtree(out, ignore_errors=True)
            return m

        return run
    from calcimage.compare import compare  # (calcimage.compare is the module once imported)
    from calcimage.study import lean_measurement

    # As `calcimage compare` and a study do: each measurement is kept without the
    # segmentation's working arrays, which comparing does not use.
    if base == "compare_measured":
        mb = lean_measurement(_measure_file(paths["uncompressed"]))
        mf = lean_measurement(_measure_file(paths["followup"]))
        return lambda: compare(mb, mf)
    if base == "compare_scratch":
        return lambda: compare(lean_measurement(_measure_file(paths["uncompressed"])),
                               lean_measurement(_measure_file(paths["followup"])))
    raise ValueError(f"unknown stage {name!r}; choose from {', '.join(STAGE_INFO)}")


def _unavailable_reason(exc: BaseException) -> str | None:
    """Why a stage cannot run yet, or None when ``exc`` is a genuine failure."""
    if isinstance(exc, Unavailable):
        return str(exc)
    if isinstance(exc, NotImplementedError):
        return f"not implemented yet ({exc})"
    if isinstance(exc, (ImportError, AttributeError)):
        return f"not importable yet ({type(exc).__name__}: {exc})"
    return None


def time_stage(fn: Callable[[], Any], runs: int) -> dict[str, Any]:
    """One warm-up, then ``runs`` timed calls; median/min/max seconds and load averages."""
    load_before = loadavg()
    t0 = time.perf_counter()
    fn()  # warm-up: lazy imports, OpenCV/NumPy first-call costs, file cache
    warmup_s = time.perf_counter() - t0
    times, cpu = [], []
    for _ in range(runs):
        gc.collect()
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {
        "median_s": round(statistics.median(times), 4),
        # CPU seconds of this process (all its threads): less sensitive to other load than wall time
        "cpu_median_s": round(statistics.median(cpu), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "runs_s": [round(t, 4) for t in times],
        "warmup_s": round(warmup_s, 4),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }


# --------------------------------------------------------------------------------------------
# memory (fresh subprocess per stage)


def _status_kb(field: str) -> int | None:
    for line in _read_text("/proc/self/status").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def child_main(stage: str, config: dict[str, Any]) -> None:
    """Body of the memory subprocess: set up, reset the peak, run once, print JSON."""
    paths = {k: Path(v) for k, v in config["paths"].items()}
    with tempfile.TemporaryDirectory(prefix="calcimage-speed-") as tmp:
        result: dict[str, Any] = {"stage": stage}
        try:
            fn = make_stage(stage, paths, Path(tmp))
            gc.collect()
            result["setup_rss_kb"] = _status_kb("VmRSS")
            result["setup_hwm_kb"] = _status_kb("VmHWM")
            result["peak_reset"] = _reset_peak_rss()
            fn()
            result["peak_kb"] = _status_kb("VmHWM")
        except Exception as exc:
            reason = _unavailable_reason(exc)
            result["unavailable" if reason else "error"] = reason or f"{type(exc).__name__}: {exc}"
    print("SPEED-CHILD " + json.dumps(result))


def study_child_main(cmd: list[str]) -> None:
    """Run ``cmd`` as a child subreaper: every descendant (the CLI's fork server and its
    workers included) is reaped here, so RUSAGE_CHILDREN covers the whole tree. Prints JSON:
    exit code, wall seconds of ``cmd``, total CPU seconds, and ``ru_maxrss`` (the largest
    single process, in kB)."""
    import ctypes
    import resource

    pr_set_child_subreaper = 36
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        code = proc.wait()
        wall = time.perf_counter() - t0
        while True:  # orphaned descendants were re-parented to us: wait for them too
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print("SPEED-STUDY " + json.dumps({
        "exit_code": code, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
        "maxrss_kb": usage.ru_maxrss, "stderr": stderr[-4000:],
    }))


def _run_with_rusage(cmd: list[str], **kwargs: Any) -> tuple[int, str, str, int, float, float]:
    """Run ``cmd``; return (exit code, stdout, stderr, ru_maxrss kB of the largest process in the
    child's tree, wall s, CPU s of the whole tree)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, **kwargs)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (proc.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                int(usage.ru_maxrss), wall, usage.ru_utime + usage.ru_stime)


def memory_stage(stage: str, paths: dict[str, Path]) -> dict[str, Any]:
    """Peak RSS of ``stage`` measured in a fresh Python process."""
    config = json.dumps({"paths": {k: str(v) for k, v in paths.items()}})
    code, out, err, maxrss_kb, _, _ = _run_with_rusage(
        [sys.executable, str(Path(__file__).resolve()), "--child", stage, "--child-config", config]
    )
    lines = [l for l in out.splitlines() if l.startswith("SPEED-CHILD ")]
    if code != 0 or not lines:
        return {"error": f"child exited {code}: {err.strip().splitlines()[-1:] or ''}"}
    res = json.loads(lines[-1].removeprefix("SPEED-CHILD "))
    mb = lambda kb: None if kb is None else round(kb / 1024, 1)  # noqa: E731
    return {
        "peak_rss_mb": mb(res.get("peak_kb")),
        "setup_rss_mb": mb(res.get("setup_rss_kb")),
        "process_maxrss_mb": mb(maxrss_kb),
        "peak_reset": res.get("peak_reset"),
        **({"unavailable": res["unavailable"]} if "unavailable" in res else {}),
        **({"error": res["error"]} if "error" in res else {}),
    }


# --------------------------------------------------------------------------------------------
# study throughput (real CLI)


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("calcimage")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("calcimage")
    if found:
        return [found]
    return [sys.executable, "-c", "from calcimage.cli.app import main; main()"]


def run_study(folder: Path, n_films: int, workers: int, workdir: Path) -> dict[str, Any]:
    out = workdir / f"study_w{workers}"
    shutil.rmtree(out, ignore_errors=True)
    load_before = loadavg()
    cmd = [*_cli(), "--quiet", "study", str(folder), "--out", str(out), "--workers", str(workers)]
    # The CLI runs every film in a fresh process forked from a fork server, so the workers are
    # not its children: a subreaper in between (study_child_main) collects their rusage.
    code, child_out, err, _, _, _ = _run_with_rusage(
        [sys.executable, str(Path(__file__).resolve()), "--study-child", json.dumps(cmd)]
    )
    lines = [l for l in child_out.splitlines() if l.startswith("SPEED-STUDY ")]
    if not lines:
        return {"command": " ".join(cmd[-6:]), "exit_code": code, "error": f"study child failed: {err[-300:]}"}
    info = json.loads(lines[-1].removeprefix("SPEED-STUDY "))
    code, err, wall = info["exit_code"], info["stderr"], info["wall_s"]
    maxrss_kb, cpu_s = info["maxrss_kb"], info["cpu_s"]
    res: dict[str, Any] = {
        "command": " ".join(cmd[-6:]),
        "exit_code": code,
        "wall_s": round(wall, 2),
        "films_per_min": round(n_films / wall * 60, 2),
        "cpu_s": round(cpu_s, 1),
        "peak_rss_mb_largest_process": round(maxrss_kb / 1024, 1),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
    errors_csv = out / "errors.csv"
    if errors_csv.exists():
        # films or pairs that failed still cost their time; the run counts, the failures are noted
        res["failed_jobs"] = max(0, len(errors_csv.read_text().strip().splitlines()) - 1)
    if code not in (0, 3):  # 3 = finished with some films/pairs failed (cli/_common.EXIT_PARTIAL)
        # keep the words of the last lines (typer draws a box around its errors)
        text = [" ".join(l.strip(" │╭╮╰╯─").split()) for l in err.strip().splitlines()]
        res["error"] = " | ".join([t for t in text if t][-2:]) or f"exit {code}"
        if "No such command" in err or "no such option" in err.lower():
            res["unavailable"] = res.pop("error")
    shutil.rmtree(out, ignore_errors=True)
    return res


# --------------------------------------------------------------------------------------------
# report


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    if not a or not b or "median_s" not in a or "median_s" not in b or not b["median_s"]:
        return None
    return round(a["median_s"] / b["median_s"], 2)


def ratios_and_targets(stages: dict[str, dict[str, Any]], study: dict[str, Any]) -> tuple[dict, list]:
    ratios: dict[str, float | None] = {}
    for suffix in ("", "_j2k"):
        ratios[f"measure{suffix}/textbook{suffix}"] = _ratio(stages.get(f"measure{suffix}"), stages.get(f"textbook{suffix}"))
        ratios[f"measure{suffix}/decode{suffix}"] = _ratio(stages.get(f"measure{suffix}"), stages.get(f"decode{suffix}"))
        ratios[f"textbook{suffix}/decode{suffix}"] = _ratio(stages.get(f"textbook{suffix}"), stages.get(f"decode{suffix}"))
    ratios["measure_write/measure"] = _ratio(stages.get("measure_write"), stages.get("measure"))
    w1, w2 = study.get("workers_1", {}), study.get("workers_2", {})
    ratios["workers2/workers1"] = (
        round(w2["films_per_min"] / w1["films_per_min"], 2)
        if w1.get("films_per_min") and w2.get("films_per_min") and "error" not in w1 and "error" not in w2 else None
    )

    def med(name: str) -> float | None:
        return stages.get(name, {}).get("median_s")

    peaks = [s["memory"]["peak_rss_mb"] for s in stages.values()
             if s.get("memory", {}).get("peak_rss_mb") is not None and "unavailable" not in s]
    peaks += [w["peak_rss_mb_largest_process"] for w in (w1, w2) if w and "error" not in w and "unavailable" not in w]

    def check(label: str, value: float | None, limit: float, higher_is_better: bool = False) -> dict:
        met = None if value is None else (value >= limit if higher_is_better else value <= limit)
        return {"target": label, "value": value, "limit": limit, "met": met}

    targets = [
        check("measure median s (uncompressed)", med("measure"), TARGET_MEASURE_S),
        check("measure median s (J2K lossless)", med("measure_j2k"), TARGET_MEASURE_S),
        check("measure / textbook", ratios["measure/textbook"], TARGET_MEASURE_OVER_TEXTBOOK),
        check("measure / decode", ratios["measure/decode"], TARGET_MEASURE_OVER_DECODE),
        check("compare median s (both measured)", med("compare_measured"), TARGET_COMPARE_S),
        check("peak RSS MB per process (max over stages/workers)", max(peaks) if peaks else None, TARGET_PEAK_MB),
        check("workers 2 / workers 1 throughput", ratios["workers2/workers1"], TARGET_WORKERS_SPEEDUP,
              higher_is_better=True),
    ]
    return ratios, targets


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "–" if v is None else format(v, spec) if isinstance(v, float) else str(v)


def render_table(result: dict[str, Any]) -> str:
    lines = []
    f = result["film"]
    lines.append(f"Film: {f['rows']} x {f['cols']} px, {f['spacing_mm']} mm, {f['bits_stored']}-bit; "
                 f"runs: {result['args']['runs']} after 1 warm-up")
    lines.append("")
    lines.append("| stage | median s | min s | max s | CPU s (median) | peak RSS MB | load avg (before→after) | what |")
    lines.append("|---|---:|---:|---:|---:|---:|---|---|")
    for name, s in result["stages"].items():
        mem = s.get("memory", {})
        if "median_s" in s:
            lines.append(
                f"| {name} | {_fmt(s['median_s'])} | {_fmt(s['min_s'])} | {_fmt(s['max_s'])} | "
                f"{_fmt(s.get('cpu_median_s'))} | {_fmt(mem.get('peak_rss_mb'), '.0f')} | {s['loadavg_before']:.2f}→{s['loadavg_after']:.2f} | "
                f"{STAGE_INFO[name]} |"
            )
        else:
            why = s.get("unavailable") or s.get("error", "")
            lines.append(f"| {name} | – | – | – | – | – | – | {'unavailable' if 'unavailable' in s else 'ERROR'}: {why} |")
    study = result.get("study", {})
    if study:
        lines.append("")
        lines.append(f"Study throughput: {study.get('n_films')} films of {study.get('rows')} x {study.get('cols')} px "
                     f"({study.get('n_films', 0) // 2} patients x baseline + follow-up), real CLI")
        lines.append("")
        lines.append("| workers | wall s | films/min | peak RSS MB (largest process) | load avg (before→after) "
                     "| failed films/pairs |")
        lines.append("|---:|---:|---:|---:|---|---:|")
        for w in (1, 2):
            r = study.get(f"workers_{w}")
            if not r:
                continue
            if "error" not in r and "unavailable" not in r:
                lines.append(f"| {w} | {r['wall_s']:.1f} | {r['films_per_min']:.1f} | "
                             f"{r['peak_rss_mb_largest_process']:.0f} | {r['loadavg_before']:.2f}→{r['loadavg_after']:.2f} | "
                             f"{r.get('failed_jobs', 0)} |")
            else:
                lines.append(f"| {w} | – | – | – | – | {r.get('unavailable') or r.get('error')} |")
    lines.append("")
    lines.append("| ratio | value |")
    lines.append("|---|---:|")
    for k, v in result["ratios"].items():
        lines.append(f"| {k} | {_fmt(v, '.2f')} |")
    lines.append("")
    lines.append("| target | value | limit | met |")
    lines.append("|---|---:|---:|---|")
    for t in result["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {_fmt(t['value'], '.2f')} | {t['limit']} | {met} |")
    m = result["machine"]
    v = m["versions"]
    lines.append("")
    lines.append(f"Machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), {m['ram_gb']} GB RAM, "
                 f"{m['os']}; Python {v.get('python')}, numpy {v.get('numpy')}, OpenCV {v.get('opencv')} "
                 f"({m['opencv_threads']} threads), pydicom {v.get('pydicom')}, scikit-image {v.get('skimage')}, "
                 f"scipy {v.get('scipy')}, calcimage {v.get('calcimage')} @ {m['git_commit']}")
    lines.append("Peak RSS: VmHWM of a fresh process per stage (reset after setup via /proc/self/clear_refs), "
                 "so it includes the interpreter, libraries and the stage's inputs.")
    return "\n".join(lines)


def profile_stage(stage: str, paths: dict[str, Path], workdir: Path, top: int) -> str:
    """Profile one run (after a warm-up) of ``stage``: a pyinstrument call tree when pyinstrument
    is installed (it is not a calcimage dependency), else cProfile's top functions."""
    fn = make_stage(stage, paths, workdir)
    fn()
    try:
        from pyinstrument import Profiler
    except ImportError:
        prof = cProfile.Profile()
        prof.enable()
        fn()
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(top)
        return buf.getvalue()
    profiler = Profiler(interval=0.001)
    profiler.start()
    fn()
    profiler.stop()
    return profiler.output_text(unicode=True, color=False, show_all=False)


# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="timed runs per stage after one warm-up (default 5)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK_ROWS}x{QUICK_COLS} film, 8 study films, 3 runs")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT.relative_to(ROOT)})")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                   help=f"folder for the generated films (default {DEFAULT_CACHE.relative_to(ROOT)})")
    p.add_argument("--rows", type=int, default=None, help=f"film rows (default {FULL_ROWS})")
    p.add_argument("--cols", type=int, default=None, help=f"film columns (default {FULL_COLS})")
    p.add_argument("--seed", type=int, default=7, help="phantom seed (default 7)")
    p.add_argument("--stages", default=",".join(STAGE_INFO),
                   help="comma-separated stages to run (default: all): " + ", ".join(STAGE_INFO))
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--study-films", type=int, default=None, help="films in the throughput study (default 40; 0 skips)")
    p.add_argument("--study-rows", type=int, default=None, help="study film rows (default: --rows)")
    p.add_argument("--study-cols", type=int, default=None, help="study film columns (default: --cols)")
    p.add_argument("--profile", metavar="STAGE", help="profile one run of STAGE (pyinstrument if installed, else cProfile), print it, exit")
    p.add_argument("--profile-top", type=int, default=30, help="functions listed by --profile with cProfile (default 30)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-config", help=argparse.SUPPRESS)
    p.add_argument("--study-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.rows = args.rows or (QUICK_ROWS if args.quick else FULL_ROWS)
    args.cols = args.cols or (QUICK_COLS if args.quick else FULL_COLS)
    if args.quick and "--runs" not in (argv if argv is not None else sys.argv[1:]):
        args.runs = 3
    if args.study_films is None:
        args.study_films = 8 if args.quick else 40
    args.study_rows = args.study_rows or args.rows
    args.study_cols = args.study_cols or args.cols
    if args.runs < 1:
        p.error(f"--runs must be >= 1, got {args.runs}")
    if args.study_films % 2:
        p.error(f"--study-films must be even (baseline + follow-up per patient), got {args.study_films}")
    unknown = [s for s in args.stages.split(",") if s and s not in STAGE_INFO]
    if unknown:
        p.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGE_INFO)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(args.child, json.loads(args.child_config))
        return 0
    if args.study_child:
        study_child_main(json.loads(args.study_child))
        return 0
    warnings.simplefilter("ignore")  # library warnings (e.g. phantom metadata notes) are not results
    started = time.time()
    print(f"calcimage speed benchmark: {args.rows}x{args.cols}, runs={args.runs}", file=sys.stderr)
    try:
        paths = prepare_inputs(args.cache, args.rows, args.cols, args.seed)
    except Unavailable as exc:
        print(f"cannot build the phantom films: {exc}", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="calcimage-speed-"))
    try:
        if args.profile:
            print(profile_stage(args.profile, paths, workdir, args.profile_top))
            return 0
        stages: dict[str, dict[str, Any]] = {}
        for name in [s for s in STAGE_INFO if s in args.stages.split(",")]:
            print(f"  {name} ...", file=sys.stderr, end=" ", flush=True)
            try:
                res = time_stage(make_stage(name, paths, workdir), args.runs)
            except Exception as exc:
                reason = _unavailable_reason(exc)
                res = {"unavailable": reason} if reason else {"error": f"{type(exc).__name__}: {exc}"}
            if "median_s" in res and not args.no_memory:
                res["memory"] = memory_stage(name, paths)
            stages[name] = res
            print(res.get("median_s", res.get("unavailable") or res.get("error")), file=sys.stderr)
        study: dict[str, Any] = {}
        if args.study_films:
            try:
                folder = prepare_study(args.cache, args.study_films, args.study_rows, args.study_cols, args.seed)
                study = {"n_films": args.study_films, "rows": args.study_rows, "cols": args.study_cols}
                for w in (1, 2):
                    print(f"  study --workers {w} ...", file=sys.stderr, end=" ", flush=True)
                    study[f"workers_{w}"] = run_study(folder, args.study_films, w, workdir)
                    r = study[f"workers_{w}"]
                    print(r.get("unavailable") or r.get("error") or r.get("films_per_min"), file=sys.stderr)
            except Unavailable as exc:
                study = {"unavailable": str(exc)}
        ratios, targets = ratios_and_targets(stages, study)
        result = {
            "started_utc": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"),
            "duration_s": None,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if not k.startswith("child")},
            "machine": machine_info(),
            "film": {"rows": args.rows, "cols": args.cols, "spacing_mm": SPACING_MM, "bits_stored": BITS_STORED,
                     "seed": args.seed, "files": {k: str(p) for k, p in paths.items()},
                     "file_mb": {k: round(p.stat().st_size / 1e6, 1) for k, p in paths.items()}},
            "stages": stages,
            "study": study,
            "ratios": ratios,
            "targets": targets,
            "memory_method": "VmHWM from /proc/self/status in a fresh subprocess per stage, reset after setup "
                             "with /proc/self/clear_refs; study: ru_maxrss (RUSAGE_CHILDREN) of a subreaper "
                             "process that reaps the CLI and every worker: the largest single process",
        }
        result["duration_s"] = round(time.time() - started, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, args.out)
        print(render_table(result))
        print(f"\nJSON: {args.out}  ({result['duration_s']} s)", file=sys.stderr)
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
