"""Small films for CLI and study tests: phantom PNGs with sidecars, and a DICOM with identity.

Phantoms are 400 × 400 at 0.3 mm (the smallest the phantom's limb fits) so a study of four
films runs in a few seconds.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import shutil
from pathlib import Path

import cv2
import numpy as np

from calcimage.phantom import PhantomParams, make_followup, make_phantom

# Clearly visible lesions (dense, 4-10 mm nodules): these films test the CLI, not the segmenter.
PARAMS = PhantomParams(rows=400, cols=400, spacing_mm=0.3, n_nodules=6, n_plaques=2, density=(0.5, 1.0),
                       nodule_diameter_mm=(4.0, 10.0))
#: (patient id, seed) of the two patients of :func:`write_study`.
PATIENTS = (("PAT-ALPHA-0001", 1), ("PAT-BRAVO-0002", 5))
DATES = ("2026-01-05", "2026-04-06")


@functools.lru_cache(maxsize=None)
def _pixels(seed: int, followup: bool) -> np.ndarray:
    base = make_phantom(seed, PARAMS)
    film = make_followup(base, seed + 1).film if followup else base.film
    return np.clip(np.round(film.pixels), 0, 65535).astype(np.uint16)


def write_png(path: Path, pixels: np.ndarray, sidecar: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)
    if sidecar is not None:
        path.with_suffix(".json").write_text(json.dumps(sidecar), encoding="utf-8")
    return path


def phantom_png(path: Path, *, seed: int = 1, followup: bool = False, patient_id: str | None = "P01",
                date: str | None = "2026-01-05", laterality: str = "L", view: str = "PA") -> Path:
    sidecar: dict = {"spacing_mm": [PARAMS.spacing_mm, PARAMS.spacing_mm], "laterality": laterality,
                     "view_position": view}
    if patient_id is not None:
        sidecar["patient_id"] = patient_id
    if date is not None:
        sidecar["study_date"] = date
    return write_png(path, _pixels(seed, followup), sidecar)


def write_study(folder: Path, patients=PATIENTS) -> Path:
    """Two patients × two dates as PNG + sidecar, in per-patient sub-folders."""
    for pid, seed in patients:
        for k, date in enumerate(DATES):
            phantom_png(folder / pid / f"film_{date}.png", seed=seed, followup=k > 0, patient_id=pid, date=date)
    return folder


def dicom_film(path: Path, *, seed: int = 1, followup: bool = False, patient_id: str = "PAT-CHARLIE-0003",
               patient_name: str = "Doelittle^Janeway", birth_date: str = "19700101", date: str = "20260105") -> Path:
    """A DX DICOM of a phantom carrying direct identifiers (to check they never leak)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = _pixels(seed, followup)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path.name), str(seed)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[patient_id, date])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[patient_id, date, "series"])
    ds.PatientName = patient_name
    ds.PatientBirthDate = birth_date
    ds.PatientID = patient_id
    # Type 2 elements of a complete DX header (report.dicom copies them into SEG/SR).
    ds.PatientSex = "O"
    ds.AccessionNumber = ""
    ds.StudyID = "1"
    ds.StudyTime = "120000"
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "calcimage tests"
    ds.StudyDate = date
    ds.Modality = "DX"
    ds.ImageLaterality = "L"
    ds.ViewPosition = "PA"
    ds.InstitutionName = "Hospital of Nowhere"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [PARAMS.spacing_mm, PARAMS.spacing_mm]
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def outputs_text(folder: Path, suffixes=(".csv", ".json")) -> dict[str, bytes]:
    """Bytes of every CSV/JSON under ``folder`` (calcimage's state folder excluded), with the
    ``timestamp`` lines removed, keyed by relative path."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and path.suffix in suffixes and not rel.startswith(".calcimage/"):
            lines = [l for l in path.read_bytes().splitlines(keepends=True) if b'"timestamp"' not in l]
            out[rel] = b"".join(lines)
    return out


def assert_same_results(a: dict[str, bytes], b: dict[str, bytes]) -> None:
    """Every CSV/JSON output byte-identical (``outputs_text`` already dropped timestamps)."""
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].decode() == b[key].decode(), key
