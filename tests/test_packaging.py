"""The built wheel installs the CLI as calcimage.cli and no top-level ``cli`` module."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_layout(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("calcimage-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names}
    assert "cli" not in top_level
    assert "calcimage/cli/app.py" in names
    assert "calcimage/io/load.py" in names
    assert "calcimage/models/candidates.json" in names  # segmentation needs its model
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "calcimage = calcimage.cli.app:main" in text


def test_console_script_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from calcimage.cli.app import main; main()", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "inspect" in proc.stdout
