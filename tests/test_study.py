"""calcimage.study: discovery, identity, ordering, study rows, folder names."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from calcimage.film import Film, FilmMetadata, SpacingSource
from calcimage.study import (
    FilmResult,
    Identity,
    PairResult,
    discover_films,
    film_identity,
    months_between,
    order_groups,
    parse_filename,
    study_rows,
    unique_folder_names,
)


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_discovery_is_recursive_sorted_and_selective(tmp_path: Path) -> None:
    touch(tmp_path / "b" / "z.dcm")
    touch(tmp_path / "a.PNG")
    touch(tmp_path / "a.json")
    touch(tmp_path / "notes.txt")
    touch(tmp_path / ".hidden.png")
    touch(tmp_path / ".cache" / "x.png")
    touch(tmp_path / "c" / "IM0001", b"\0" * 128 + b"DICM" + b"\0" * 10)
    touch(tmp_path / "c" / "README", b"just text")
    touch(tmp_path / "d" / "x.tif")
    found = [p.relative_to(tmp_path).as_posix() for p in discover_films(tmp_path)]
    assert found == ["a.PNG", "b/z.dcm", "c/IM0001", "d/x.tif"]


def test_symlink_loops_end_the_walk(tmp_path: Path) -> None:
    touch(tmp_path / "root" / "sub" / "a.png")
    (tmp_path / "root" / "sub" / "up").symlink_to(tmp_path / "root", target_is_directory=True)
    (tmp_path / "root" / "self").symlink_to(tmp_path / "root" / "sub", target_is_directory=True)
    found = discover_films(tmp_path / "root")
    assert len(found) == 1 and found[0].name == "a.png"


def test_followed_symlinked_folder_outside(tmp_path: Path) -> None:
    touch(tmp_path / "elsewhere" / "b.dcm")
    touch(tmp_path / "root" / "a.dcm")
    (tmp_path / "root" / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert [p.name for p in discover_films(tmp_path / "root")] == ["a.dcm", "b.dcm"]


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("P01_L_PA_2026-01-15", Identity("P01", "L", "PA", dt.date(2026, 1, 15))),
        ("P01_R_AP_20260115_extra", Identity("P01", "R", "AP", dt.date(2026, 1, 15))),
        ("P01_L_PA_2026-02-30", Identity("P01", "L", "PA", None)),
        ("P01_X_PA_2026-01-15", None),
        ("scan_0001", None),
    ],
)
def test_parse_filename(stem: str, expected: Identity | None) -> None:
    assert parse_filename(Path(f"/x/{stem}.png")) == expected


def _film(path: str, **meta) -> Film:
    import numpy as np

    return Film(np.zeros((4, 4), np.float32), None, SpacingSource.NONE, FilmMetadata(**meta), path=Path(path))


def test_identity_prefers_metadata_and_fills_from_the_name() -> None:
    film = _film("/d/P01_L_PA_2026-01-15.png", patient_id="META", view_position="LAT")
    assert film_identity(film) == Identity("META", "L", "LAT", dt.date(2026, 1, 15))
    assert film_identity(_film("/d/scan.png")) == Identity(None, None, None, None)


def test_months_between() -> None:
    assert months_between(dt.date(2026, 1, 1), dt.date(2026, 1, 1)) == 0.0
    assert months_between(dt.date(2026, 1, 1), dt.date(2030, 1, 1)) == 48.0  # 1461 days, leap year included
    assert months_between(dt.date(2026, 1, 1), dt.date(2027, 1, 1)) == 11.99
    assert months_between(dt.date(2026, 1, 5), dt.date(2026, 4, 6)) == 2.99
    assert months_between(None, dt.date(2026, 1, 1)) is None


def test_unique_folder_names() -> None:
    paths = [Path("a/film.png"), Path("b/film.dcm"), Path("c/FILM.png"), Path("d/../x y.png")]
    assert unique_folder_names(paths) == ["film", "film_2", "FILM_3", "x_y"]


def fr(group: str, film_id: str, date: str | None, count: int, area: float, ok: bool = True) -> FilmResult:
    return FilmResult(source=film_id, ok=ok, sha256=film_id, folder=f"{group}/{film_id}", group=group,
                      film_id=film_id, input_name=film_id, date=date, lesion_count=count,
                      total_area_mm2=area, total_area_px=int(area * 10), total_burden=area * 2)


def test_order_groups_baseline_first_undated_last() -> None:
    films = [fr("g2", "c", "2026-03-01", 1, 1.0), fr("g1", "b", None, 1, 1.0), fr("g1", "a", "2026-05-01", 1, 1.0),
             fr("g1", "z", "2026-01-01", 1, 1.0), fr("g1", "bad", None, 0, 0, ok=False)]
    groups = order_groups(films)
    assert list(groups) == ["g1", "g2"]
    assert [f.film_id for f in groups["g1"]] == ["z", "a", "b"]


def test_study_rows() -> None:
    groups = {"g": [fr("g", "t0", "2026-01-05", 3, 10.0), fr("g", "t1", "2026-04-06", 2, 5.0),
                    fr("g", "t2", "2026-10-05", 4, 14.0)]}
    pairs = {("g", "t1"): PairResult(source="", ok=True, change_pct=-50.0, category="regression"),
             ("g", "t2"): PairResult(source="", ok=False, error="films do not align")}
    rows = study_rows(groups, pairs)
    assert [(r["film"], r["months_since_baseline"], r["change_pct"], r["category"]) for r in rows] == [
        ("t0", 0.0, None, "baseline"), ("t1", 2.99, -50.0, "regression"), ("t2", 8.97, None, "failed")]
    assert rows[2]["lesion_count"] == 4 and rows[2]["total_area_mm2"] == 14.0


def test_fifo_is_never_opened(tmp_path: Path) -> None:
    from calcimage.study import file_sha256

    os.mkfifo(tmp_path / "pipe.dcm")
    os.mkfifo(tmp_path / "IMPIPE")
    assert [p.name for p in discover_films(tmp_path)] == ["pipe.dcm"]  # listed, so its failure is reported
    assert file_sha256(tmp_path / "pipe.dcm") is None


def test_calcimage_results_folders_are_not_searched(tmp_path: Path) -> None:
    touch(tmp_path / "a.png")
    touch(tmp_path / "old-results" / "g" / "f" / "labels.png")
    touch(tmp_path / "old-results" / ".calcimage" / "marker.json", b"{}")
    assert [p.name for p in discover_films(tmp_path)] == ["a.png"]


# --------------------------------------------------------------------------- measuring once


@pytest.fixture(scope="module")
def measured_pair(tmp_path_factory: pytest.TempPathFactory):
    """Two films of one patient measured by the study's film job (study layout)."""
    from _cli_films import phantom_png

    from calcimage.study import RunSettings, measure_film_job

    root = tmp_path_factory.mktemp("pair")
    paths = (phantom_png(root / "in" / "a.png", seed=1, date="2026-01-05"),
             phantom_png(root / "in" / "b.png", seed=1, followup=True, date="2026-04-06"))
    out = root / "out"
    settings = RunSettings(salt="test-salt")
    films = tuple(measure_film_job(str(p), str(out), settings) for p in paths)
    assert all(f.ok for f in films), [f.error for f in films]
    return out, settings, films, paths


def _pair_outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: b"".join(l for l in p.read_bytes().splitlines(keepends=True) if b'"timestamp"' not in l)
            for p in sorted(folder.iterdir())}


def test_rebuilt_measurement_equals_a_fresh_one(measured_pair) -> None:
    import numpy as np

    from calcimage.report.tables import summary_dict
    from calcimage.study import measure_file, rebuilt_measurement

    out, settings, films, paths = measured_pair
    for film, path in zip(films, paths):
        fresh = measure_file(path, settings)
        rebuilt = rebuilt_measurement(path, film, out, settings)
        assert rebuilt is not None
        assert fresh.lesion_count > 0
        assert rebuilt.lesions == fresh.lesions
        assert rebuilt.regions == fresh.regions
        assert rebuilt.labels.dtype == np.uint16 and fresh.labels.dtype == np.int32  # as lean_measurement
        assert np.array_equal(rebuilt.labels, fresh.labels)
        assert np.array_equal(rebuilt.film.pixels, fresh.film.pixels)
        assert rebuilt.segmentation.params == fresh.segmentation.params
        assert rebuilt.regions_spec == fresh.regions_spec == settings.regions
        assert rebuilt.measure_params == fresh.measure_params
        for name in ("collimation", "marker", "bone"):
            mask = fresh.segmentation.excluded.get(name)
            assert (mask is None) == (name not in rebuilt.segmentation.excluded)
            if mask is not None:
                assert np.array_equal(rebuilt.segmentation.excluded[name], mask)
        added = fresh.segmentation.pixel_added
        assert (added is None) == (rebuilt.segmentation.pixel_added is None)
        if added is not None:
            assert np.array_equal(rebuilt.segmentation.pixel_added, added)
        kw = {"input_name": "x", "with_timestamp": False}
        assert summary_dict(rebuilt, **kw) == summary_dict(fresh, **kw)


def test_pair_job_measures_no_film_again(measured_pair, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import shutil

    import calcimage.study as study

    out, settings, films, paths = measured_pair
    copy = tmp_path / "out"
    shutil.copytree(out, copy)

    def measured_again(*args, **kwargs):
        raise AssertionError("a film was measured again")

    with monkeypatch.context() as m:
        m.setattr(study, "measure_file", measured_again)
        once = study.compare_pair_job(films[0], films[1], str(paths[0]), str(paths[1]), str(copy), settings,
                                      folder="g/compare_once")
    assert once.ok, once.error
    # Without the saved data (an older results folder, a damaged file) the films are measured
    # again, with the same results.
    saved = sorted((copy / ".calcimage" / "films").glob("*.compare.npz"))
    assert len(saved) == 2
    saved[0].unlink()
    saved[1].write_bytes(b"not an npz")
    assert study.rebuilt_measurement(paths[0], films[0], copy, settings) is None
    again = study.compare_pair_job(films[0], films[1], str(paths[0]), str(paths[1]), str(copy), settings,
                                   folder="g/compare_again")
    assert again.ok, again.error
    assert (once.change_pct, once.category) == (again.change_pct, again.category)
    assert _pair_outputs(copy / "g" / "compare_once") == _pair_outputs(copy / "g" / "compare_again")


def test_saved_data_of_other_settings_is_not_used(measured_pair) -> None:
    import dataclasses

    from calcimage.params import Config
    from calcimage.segment import SegmentParams
    from calcimage.study import _compare_data_path, rebuilt_measurement

    out, settings, films, paths = measured_pair
    other = dataclasses.replace(settings, config=Config(segment=SegmentParams(min_area_mm2=5.0)))
    # Same file name as the real one, other segment parameters inside: refused.
    target = _compare_data_path(out, films[0].sha256, other)
    target.write_bytes(_compare_data_path(out, films[0].sha256, settings).read_bytes())
    try:
        assert rebuilt_measurement(paths[0], films[0], out, other) is None
        assert rebuilt_measurement(paths[0], films[0], out, settings) is not None
    finally:
        target.unlink()


def test_lean_measurement_drops_working_arrays_and_compares_the_same(measured_pair) -> None:
    import numpy as np

    from calcimage.compare import compare
    from calcimage.study import lean_measurement, measure_file

    _, settings, _, paths = measured_pair
    full = [measure_file(p, settings) for p in paths]
    lean = [lean_measurement(m) for m in full]
    for f, l in zip(full, lean):
        seg = l.segmentation
        assert seg.background is None and seg.threshold_map is None
        assert seg.flattened.shape == f.segmentation.flattened.shape and seg.flattened.strides == (0, 0)
        assert set(seg.excluded) == set(f.segmentation.excluded) & {"collimation", "marker", "bone"}
        assert l.lesions == f.lesions and l.film is f.film
        # the labels as uint16 (half the memory), the same ids
        assert l.labels.dtype == np.uint16 and np.array_equal(l.labels, f.labels)
        assert l.segmentation.labels is l.labels
        assert f.segmentation.background is not None  # the original is untouched
    a, b = compare(*full), compare(*lean)
    assert a.lesions == b.lesions and a.change == b.change and a.category == b.category
    assert np.array_equal(a.registration.matrix, b.registration.matrix)
