"""calcimage.report.atomic: files appear whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from calcimage.report.atomic import TMP_SUFFIX, atomic_path, remove_stale_temporaries, write_bytes, write_text


def test_write_creates_folders_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "x.csv"
    write_text(target, "one\n")
    write_bytes(target, b"two\n")
    assert target.read_bytes() == b"two\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.csv"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            assert tmp.name.endswith(".json" + TMP_SUFFIX) and tmp.parent == tmp_path
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_remove_stale_temporaries(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / f".x.png.1234.png{TMP_SUFFIX}").write_bytes(b"half")
    (tmp_path / "keep.png").write_bytes(b"whole")
    assert remove_stale_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["keep.png"]
