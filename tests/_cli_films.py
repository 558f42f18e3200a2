"""Small films for CLI and study tests: phantom PNGs with sidecars, and a DICOM with identity.

Phantoms are 400 × 400 at 0.3 mm (the smallest the phantom's limb fits) so a study of four
films runs in a few seconds.
"""

from __future__ import annotations

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


def dx_dataset(pixels: np.ndarray, *, bits_stored: int = 16, **attributes: object):
    """An uncompressed DX (for presentation, MONOCHROME2) dataset of ``pixels`` (uint16) with the
    attributes a complete header needs (type 2 ones empty), overridden or extended by
    ``attributes`` (DICOM keywords); the file meta follows the final SOP UIDs."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = ""
    ds.PatientName = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = "20250101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.Modality = "DX"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def dicom_film(path: Path, *, seed: int = 1, followup: bool = False, patient_id: str = "PAT-CHARLIE-0003",
               patient_name: str = "Doelittle^Janeway", birth_date: str = "19700101", date: str = "20260105") -> Path:
    """A DX DICOM of a phantom carrying direct identifiers (to check they never leak)."""
    from pydicom.uid import generate_uid

    ds = dx_dataset(
        _pixels(seed, followup),
        SOPInstanceUID=generate_uid(entropy_srcs=[str(path.name), str(seed)]),
        StudyInstanceUID=generate_uid(entropy_srcs=[patient_id, date]),
        SeriesInstanceUID=generate_uid(entropy_srcs=[patient_id, date, "series"]),
        PatientName=patient_name,
        PatientBirthDate=birth_date,
        PatientID=patient_id,
        StudyDate=date,
        Manufacturer="calcimage tests",
        ImageLaterality="L",
        ViewPosition="PA",
        InstitutionName="Hospital of Nowhere",
        PixelSpacing=[PARAMS.spacing_mm, PARAMS.spacing_mm],
    )
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
