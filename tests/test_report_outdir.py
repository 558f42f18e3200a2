"""calcimage.report.outdir: unsafe output folders are refused; calcimage's own are resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calcimage.errors import OutputError
from calcimage.report.outdir import (
    MARKER,
    STATE_DIR,
    cache_path,
    check_output_location,
    prepare_output,
    read_cache,
    write_cache,
)


def test_output_equal_to_or_inside_an_input_folder(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for out in (tmp_path / "in", tmp_path / "in" / "res", tmp_path / "in" / "a" / ".." / "res"):
        with pytest.raises(OutputError, match="inside the input folder"):
            check_output_location(out, [tmp_path / "in"])


def test_input_inside_output(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    film = tmp_path / "out" / "a.dcm"
    film.write_bytes(b"x")
    with pytest.raises(OutputError, match="inside the output folder"):
        check_output_location(tmp_path, [film])


def test_symlinked_output_into_the_input_is_refused(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "in", target_is_directory=True)
    with pytest.raises(OutputError):
        check_output_location(tmp_path / "link" / "res", [tmp_path / "in"])


def test_sibling_folders_are_fine(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    check_output_location(tmp_path / "in-results", [tmp_path / "in"])


def test_marker_force_and_resume(tmp_path: Path) -> None:
    out = prepare_output(tmp_path / "new", [])
    marker = json.loads((out / STATE_DIR / MARKER).read_text())
    assert marker["created_by"] == "calcimage"
    prepare_output(out, [])  # ours: resumes
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "a.txt").write_text("x")
    with pytest.raises(OutputError, match="--force"):
        prepare_output(foreign, [])
    prepare_output(foreign, [], force=True)
    assert (foreign / STATE_DIR / MARKER).is_file() and (foreign / "a.txt").read_text() == "x"
    (tmp_path / "empty").mkdir()
    prepare_output(tmp_path / "empty", [])


def test_salt_fingerprint_must_match(tmp_path: Path) -> None:
    out = prepare_output(tmp_path / "o", [], salt_fingerprint="aaa")
    prepare_output(out, [], salt_fingerprint="aaa")
    with pytest.raises(OutputError, match="salt"):
        prepare_output(out, [], salt_fingerprint="bbb")


def test_output_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        prepare_output(tmp_path / "f", [], force=True)


def test_cache_entry_needs_its_files(tmp_path: Path) -> None:
    path = cache_path(tmp_path, "films", "abc", "key")
    write_cache(path, {"files": ["g/f/summary.json"], "folder": "g/f"})
    assert read_cache(path, tmp_path) is None
    (tmp_path / "g" / "f").mkdir(parents=True)
    (tmp_path / "g" / "f" / "summary.json").write_text("{}")
    assert read_cache(path, tmp_path) == {"files": ["g/f/summary.json"], "folder": "g/f"}
    path.write_text("{broken")
    assert read_cache(path, tmp_path) is None
