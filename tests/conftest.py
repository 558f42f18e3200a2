"""Shared fixtures: paths to the real DICOM films and to the sample films."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Real DICOM films shipped beside the project (see ../shared/data/real/MANIFEST.md).
REAL_DIR = ROOT.parent / "shared" / "data" / "real"
SAMPLE_DIR = ROOT / "sample_images"


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """The folder of real DICOM films; skips the test when it is absent."""
    if not REAL_DIR.is_dir():
        pytest.skip(f"real DICOM films not found at {REAL_DIR} (../shared/data/real is absent)")
    return REAL_DIR


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The committed sample films (sample_images/)."""
    return SAMPLE_DIR
