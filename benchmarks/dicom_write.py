"""Time DICOM SEG + SR writing (calcimage.report.dicom) against the number of lesions.

Run:  .venv/bin/python benchmarks/dicom_write.py [N ...]     (default N = 10 50 200)

Writes a 2000 x 2000 DX film (0.15 mm) with N round lesions of 2-4 mm into a temporary
folder, builds its Measurement by hand (so only the DICOM writing is timed) and prints the
time of ``write_dicom_results`` and the file sizes.
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import calcimage
from calcimage.film import SpacingSource
from calcimage.io.write import write_dicom
from calcimage.measure import Lesion, Measurement
from calcimage.report.dicom import write_dicom_results
from calcimage.segment import LesionKind, Segmentation

SIZE = 2000
SPACING_MM = 0.15


def write_film(path: Path) -> None:
    """A DX of a 12-bit ramp (the pixels do not matter here), written by calcimage's writer."""
    pixels = (np.arange(SIZE * SIZE, dtype=np.uint32) % 4096).reshape(SIZE, SIZE).astype(np.float32)
    film = calcimage.Film(pixels, (SPACING_MM, SPACING_MM), SpacingSource.USER)
    write_dicom(film, path, patient_id="BENCH", study_date="20250101", bits_stored=12)


def measurement(film: calcimage.Film, n: int, rng: np.random.Generator) -> Measurement:
    labels = np.zeros(film.shape, np.int32)
    rr, cc = np.mgrid[0:SIZE, 0:SIZE]
    centres = rng.uniform(100, SIZE - 100, size=(n, 2))
    lesions = []
    for k, (r, c) in enumerate(centres, start=1):
        radius_px = rng.uniform(1.0, 2.0) / SPACING_MM
        window = (slice(int(r - radius_px) - 1, int(r + radius_px) + 2), slice(int(c - radius_px) - 1, int(c + radius_px) + 2))
        disc = (rr[window] - r) ** 2 + (cc[window] - c) ** 2 <= radius_px**2
        labels[window][disc & (labels[window] == 0)] = k
    for k in range(1, n + 1):
        area_px = int((labels == k).sum())
        area_mm2 = area_px * SPACING_MM**2
        lesions.append(
            Lesion(k, "all", LesionKind.NODULE if k % 3 else LesionKind.PLAQUE, area_mm2, area_px, 0.0, 0.0,
                   None, None, None, None, 0.0, 1.0, 0.0, 0.0, 2, 2 * area_mm2)
        )
    seg = Segmentation(labels, tuple(l.kind for l in lesions), 1.0, 0.5, np.zeros((1, 1), np.float32))
    return Measurement(film, seg, labels, tuple(lesions), ())


def main(counts: list[int]) -> None:
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "film.dcm"
        write_film(path)
        film = calcimage.load(path)
        print(f"{'lesions':>8} {'seconds':>8} {'ms/lesion':>10} {'SEG kB':>8} {'SR kB':>8}")
        for n in counts:
            m = measurement(film, n, rng)
            if any(l.area_px == 0 for l in m.lesions):  # overlapping discs: skip this draw
                continue
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                written = write_dicom_results(m, Path(tmp) / f"out{n}")
            seconds = time.perf_counter() - t0
            seg_kb, sr_kb = (p.stat().st_size / 1024 for p in written)
            print(f"{n:>8} {seconds:>8.2f} {1000 * seconds / n:>10.1f} {seg_kb:>8.0f} {sr_kb:>8.0f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10, 50, 200])
