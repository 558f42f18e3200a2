"""The committed sample set: regenerates byte-identically, loads, and its truth is consistent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

import calcimage
from calcimage.phantom import read_truth_labels, write_sample_set

FILMS = (
    "SYN001_L_PA_2025-01-15.dcm",
    "SYN001_L_PA_2025-04-15.dcm",
    "SYN001_L_PA_2025-10-15.png",
    "SYN002_R_AP_2025-02-03.dcm",
    "SYN002_R_AP_2025-05-05.dcm",
    "SYN002_R_AP_2025-11-03.dcm",
)


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("samples")
    write_sample_set(out)
    return out


def _truth(folder: Path, film: str) -> dict:
    stem = film.rsplit(".", 1)[0]
    return json.loads((folder / f"{stem}.truth.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_regenerating_gives_byte_identical_files(sample_dir, regenerated):
    committed = sorted(p.name for p in sample_dir.iterdir() if p.name != "README.md")
    fresh = sorted(p.name for p in regenerated.iterdir())
    assert fresh == committed
    differing = [name for name in fresh if (regenerated / name).read_bytes() != (sample_dir / name).read_bytes()]
    # Say whether the picture changed (the phantom did) or only the encoding (a library did).
    same_pixels = [
        name for name in differing
        if name.endswith((".dcm", ".png"))
        and np.array_equal(calcimage.load(regenerated / name).pixels, calcimage.load(sample_dir / name).pixels)
    ]
    assert differing == [], (
        f"sample_images/ no longer matches calcimage.phantom: {differing}; of these, "
        f"{same_pixels or 'none'} decode to the same pixels (an encoder library changed its "
        "output). If the change is intended, run `calcimage phantom --samples --out "
        "sample_images` and commit."
    )


def test_the_set_is_small(sample_dir):
    total = sum(p.stat().st_size for p in sample_dir.iterdir())
    assert total < 6_000_000


@pytest.mark.parametrize("film", FILMS)
def test_every_film_loads_with_its_identity_and_spacing(sample_dir, film):
    loaded = calcimage.load(sample_dir / film)
    truth = _truth(sample_dir, film)
    assert loaded.shape == (truth["rows"], truth["cols"]) == (1000, 850)
    assert loaded.spacing_mm == pytest.approx((0.2, 0.2), rel=1e-9)
    m = loaded.metadata
    assert m.patient_id == truth["patient_id"]
    assert m.study_date.isoformat() == truth["study_date"]
    assert m.laterality == truth["laterality"]
    assert m.view_position == truth["view_position"]
    # Brighter = denser whatever the storage: collimated borders are brighter than open air.
    labels = read_truth_labels(sample_dir / truth["labels"])
    px = loaded.pixels
    assert np.median(px[:5, :]) > np.median(px[labels == 0])


def test_the_set_has_the_documented_variety(sample_dir):
    loaded = {name: calcimage.load(sample_dir / name) for name in FILMS}
    photometric = [f.metadata.photometric_interpretation for f in loaded.values()]
    assert photometric.count("MONOCHROME1") >= 1
    assert sum(f.metadata.source_format == "png" for f in loaded.values()) == 1
    sources = {f.spacing_source.value for f in loaded.values()}
    assert {"PixelSpacing", "ImagerPixelSpacing", "ImagerPixelSpacing/ERMF", "sidecar"} <= sources
    groups = {(f.metadata.patient_id, f.metadata.laterality, f.metadata.view_position) for f in loaded.values()}
    assert groups == {("SYN001", "L", "PA"), ("SYN002", "R", "AP")}
    for name in FILMS:
        if name.endswith(".dcm"):
            ds = pydicom.dcmread(sample_dir / name, stop_before_pixels=True)
            assert str(ds.PatientName) == "" and ds.Modality == "DX"


@pytest.mark.parametrize("film", FILMS)
def test_truth_labels_match_the_truth_json(sample_dir, film):
    truth = _truth(sample_dir, film)
    labels = read_truth_labels(sample_dir / truth["labels"])
    assert labels.shape == (1000, 850)
    n = truth["lesion_count"]
    assert int(labels.max()) == n == len(truth["lesions"])
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    pixel_area = 0.2 * 0.2
    for lesion, count in zip(truth["lesions"], counts):
        assert lesion["area_px"] == count
        assert lesion["area_mm2"] == pytest.approx(count * pixel_area, abs=1e-6)
    assert truth["total_area_mm2"] == pytest.approx(counts.sum() * pixel_area, abs=1e-6)


def test_one_patient_improves_and_the_other_progresses(sample_dir):
    change = {name: _truth(sample_dir, name)["true_change_pct"] for name in FILMS}
    a = [change[n] for n in FILMS[:3]]
    b = [change[n] for n in FILMS[3:]]
    assert a[0] == b[0] == 0.0
    assert 0 > a[1] > a[2] and a[2] < -25.0
    assert 0 < b[1] < b[2] and b[1] > 25.0
    # Follow-up truth is relative to the series' baseline.
    base_a = _truth(sample_dir, FILMS[0])["total_area_mm2"]
    for name in FILMS[1:3]:
        t = _truth(sample_dir, name)
        assert t["baseline_total_area_mm2"] == base_a
        expected = (t["total_area_mm2"] / t["magnification"] ** 2 - base_a) / base_a * 100.0
        assert t["true_change_pct"] == pytest.approx(expected, abs=1e-5)
