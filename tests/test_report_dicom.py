"""DICOM SEG + Comprehensive SR (TID 1500) output: write, read back, compare with the lesions."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import warnings
from pathlib import Path

import cv2
import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from skimage.draw import polygon2mask

import calcimage
from _cli_films import dx_dataset
from calcimage.compare import Category, Comparison, LesionChange, Registration, Status
from calcimage.errors import CalcimageWarning, OutputError
from calcimage.measure import Lesion, Measurement
from calcimage.report.dicom import (
    CODES,
    SEG_SUFFIX,
    SR_SUFFIX,
    TimePoint,
    TrackingMap,
    build_tracking,
    dicom_skip_reason,
    film_key,
    lesion_outline,
    measurement_from_outputs,
    time_points,
    write_dicom_for_outputs,
    write_dicom_for_pair,
    write_dicom_results,
)
from calcimage.segment import LesionKind, Segmentation

N, P = LesionKind.NODULE, LesionKind.PLAQUE


# ------------------------------------------------------------------------------------------
# helpers


def write_dx(
    path: Path,
    *,
    rows: int = 40,
    cols: int = 50,
    spacing: tuple[float, float] | None = (0.2, 0.2),
    study_date: str = "20250101",
    study_uid: str | None = None,
    orientation: bool = False,
) -> Path:
    """A small uncompressed DX (MONOCHROME2) with the UIDs a reference needs."""
    extra: dict[str, object] = {}
    if study_uid:
        extra["StudyInstanceUID"] = study_uid
    if spacing is not None:
        extra["PixelSpacing"] = list(spacing)
    if orientation:
        extra["PatientOrientation"] = ["L", "F"]
        extra["ImagerPixelSpacing"] = list(spacing or (0.1, 0.1))
    pixels = np.arange(rows * cols, dtype=np.uint16).reshape(rows, cols) % 4096
    ds = dx_dataset(
        pixels, bits_stored=12, PatientID="CALC-001", PatientName="Test^Patient", PatientSex="F",
        StudyDate=study_date, AccessionNumber="ACC1", ImageLaterality="L", ViewPosition="PA",
        BodyPartExamined="HAND", **extra,
    )
    ds.save_as(path, enforce_file_format=True)
    return path


def measured(film: calcimage.Film, labels: np.ndarray, kinds, grades=None) -> Measurement:
    """A Measurement built by hand from a label image (values computed exactly here)."""
    labels = labels.astype(np.int32)
    grades = grades or [1 + (k % 4) for k in range(len(kinds))]
    px_mm2 = film.pixel_area_mm2
    lesions = []
    for k, (kind, grade) in enumerate(zip(kinds, grades), start=1):
        rr, cc = np.nonzero(labels == k)
        area_px = int(rr.size)
        area_mm2 = area_px * px_mm2 if px_mm2 is not None else None
        lesions.append(
            Lesion(
                lesion_id=k, region="all", kind=kind, area_mm2=area_mm2, area_px=area_px,
                centroid_row=float(rr.mean()), centroid_col=float(cc.mean()),
                equivalent_diameter_mm=None, major_axis_mm=None, minor_axis_mm=None, perimeter_mm=None,
                eccentricity=0.0, solidity=1.0, mean_intensity=1.0, max_intensity=2.0,
                density_grade=grade, burden=(area_mm2 if area_mm2 is not None else area_px) * grade,
            )
        )
    seg = Segmentation(labels, tuple(kinds), 1.0, 0.5, np.zeros(film.shape, np.float32))
    return Measurement(film=film, segmentation=seg, labels=labels, lesions=tuple(lesions), regions=())


def three_lesions(shape=(40, 50)) -> tuple[np.ndarray, tuple[LesionKind, ...]]:
    labels = np.zeros(shape, np.int32)
    labels[5:10, 5:10] = 1  # square nodule
    labels[20:24, 10:40] = 2  # long plaque
    labels[30:33, 3:6] = 3  # small nodule
    labels[30, 6] = 3  # with a bump, so not a rectangle
    return labels, (N, P, N)


def group_num(group, code) -> list[float]:
    """Values of the NUM items named ``code`` directly in a measurement group."""
    return [float(item.value) for item in group.get_measurements(name=code)]


def time_point_items(group) -> dict[str, object]:
    """TID 1502 items of a group, by code meaning."""
    out: dict[str, object] = {}
    for item in group[0].ContentSequence:
        name = item.ConceptNameCodeSequence[0].CodeMeaning
        if name in ("Time Point", "Subject Time Point Identifier"):
            out[name] = item.TextValue
        elif name in ("Time Point Order", "Longitudinal Temporal Offset from Event"):
            out[name] = float(item.MeasuredValueSequence[0].NumericValue)
    return out


def comparison(base: Measurement, follow: Measurement, rows) -> Comparison:
    return Comparison(
        baseline=base,
        followup=follow,
        registration=Registration(matrix=np.eye(2, 3), scale=1.0, quality=1.0),
        lesions=tuple(rows),
        change={},
        regions=(),
        category=Category.STABLE,
        interval_days=None,
    )


# ------------------------------------------------------------------------------------------
# round trip


@pytest.mark.parametrize("spacing", [(0.2, 0.2), (0.1, 0.15)])
def test_seg_and_sr_round_trip(tmp_path: Path, spacing: tuple[float, float]) -> None:
    path = write_dx(tmp_path / "hand.dcm", spacing=spacing)
    film = calcimage.load(path)
    labels, kinds = three_lesions()
    m = measured(film, labels, kinds, grades=[3, 2, 4])

    written = write_dicom_results(m, tmp_path / "out")

    assert written == [tmp_path / "out" / f"hand{SEG_SUFFIX}", tmp_path / "out" / f"hand{SR_SUFFIX}"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in written)
    src = pydicom.dcmread(path)

    # --- SEG
    seg = hd.seg.segread(written[0])
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == src.StudyInstanceUID
    assert seg.get_source_image_uids() == [(src.StudyInstanceUID, src.SeriesInstanceUID, src.SOPInstanceUID)]
    assert seg.number_of_segments == 2
    d1, d2 = seg.get_segment_description(1), seg.get_segment_description(2)
    assert (d1.segment_label, d2.segment_label) == ("calcinosis nodule", "calcinosis plaque")
    assert d1.segmented_property_type == CODES.nodule and d2.segmented_property_type == CODES.plaque
    assert d1.segmented_property_category == codes.SCT.MorphologicallyAbnormalStructure
    modifier = d1.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0]
    assert modifier.CodeValue == "237897009"  # Calcified
    assert seg.PatientOrientation == ""  # the source has none; type 2C without plane geometry
    assert d1.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    alg = d1.algorithm_identification[0]
    assert (alg.AlgorithmName, alg.AlgorithmVersion) == ("calcimage", calcimage.__version__)
    assert alg.AlgorithmFamilyCodeSequence[0].CodeValue == "123105"  # Histogram Analysis, not AI
    masks = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[src.SOPInstanceUID], segment_numbers=[1, 2]
    )
    assert masks.shape == (1, 40, 50, 2)
    np.testing.assert_array_equal(masks[0, ..., 0] > 0, np.isin(labels, [1, 3]))
    np.testing.assert_array_equal(masks[0, ..., 1] > 0, labels == 2)

    # --- SR
    sr = hd.sr.srread(written[1])
    assert isinstance(sr, hd.sr.ComprehensiveSR)
    assert sr.StudyInstanceUID == src.StudyInstanceUID
    assert sr.CompletionFlag == "COMPLETE"
    assert [i.CodingSchemeDesignator for i in sr.CodingSchemeIdentificationSequence] == ["99CALCIMAGE"]
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert evidence == {src.SOPInstanceUID, seg.SOPInstanceUID}
    report = sr.content
    observer = report.get_observer_contexts()[0]
    assert observer.observer_type == codes.DCM.Device
    assert observer.observer_identifying_attributes.name == "calcimage"

    planar = report.get_planar_roi_measurement_groups()
    per_lesion = [g for g in planar if g.reference_type == codes.DCM.ImageRegion]
    per_class = [g for g in planar if g.reference_type == codes.DCM.ReferencedSegmentationFrame]
    assert len(per_lesion) == 3 and len(per_class) == 2
    for lesion, group in zip(m.lesions, per_lesion):
        assert group.tracking_identifier == f"lesion {lesion.lesion_id}"
        assert group.finding_type == {N: CODES.nodule, P: CODES.plaque}[lesion.kind]
        assert group_num(group, codes.SCT.Area) == [pytest.approx(lesion.area_mm2, rel=1e-12)]
        assert group.get_measurements(name=codes.SCT.Area)[0].unit == codes.UCUM.SquareMillimeter
        assert group_num(group, CODES.density_grade) == [lesion.density_grade]
        assert group_num(group, CODES.burden) == [pytest.approx(lesion.burden, rel=1e-12)]
        roi = group.roi
        assert roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        assert roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
        xy = roi.value
        raster = polygon2mask(labels.shape, np.stack([xy[:, 1] - 0.5, xy[:, 0] - 0.5], axis=1))
        np.testing.assert_array_equal(raster, labels == lesion.lesion_id)
    for kind, number, group in zip((N, P), (1, 2), per_class):
        ref = group.referenced_segmentation_frame[0].ReferencedSOPSequence[0]
        assert ref.ReferencedSOPInstanceUID == seg.SOPInstanceUID
        assert "ReferencedSegmentNumber" not in ref  # frame or segment number, not both
        frame = seg.PerFrameFunctionalGroupsSequence[int(ref.ReferencedFrameNumber) - 1]
        assert frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber == number
        members = [l for l in m.lesions if l.kind is kind]
        assert group_num(group, codes.SCT.Area) == [pytest.approx(sum(l.area_mm2 for l in members), rel=1e-12)]
        assert group_num(group, CODES.count) == [len(members)]
    (totals,) = report.get_image_measurement_groups()
    assert totals.tracking_identifier == "calcinosis total"
    assert group_num(totals, codes.SCT.Area) == [pytest.approx(m.total_area_mm2, rel=1e-12)]
    assert group_num(totals, CODES.count) == [3]
    assert group_num(totals, CODES.burden) == [pytest.approx(m.total_burden, rel=1e-12)]
    assert time_point_items(totals) == {
        "Time Point": "T0",
        "Time Point Order": 1.0,
        "Subject Time Point Identifier": "2025-01-01",
        "Longitudinal Temporal Offset from Event": 0.0,
    }


def test_patient_module_is_copied_from_the_source_only(tmp_path: Path) -> None:
    path = write_dx(tmp_path / "f.dcm")
    m = measured(calcimage.load(path), *three_lesions())
    seg_path, sr_path = write_dicom_results(m, tmp_path)
    for out in (seg_path, sr_path):
        ds = pydicom.dcmread(out)
        assert (str(ds.PatientName), ds.PatientID, ds.PatientSex) == ("Test^Patient", "CALC-001", "F")
        assert ds.StudyInstanceUID != "" and ds.SeriesInstanceUID not in (pydicom.dcmread(path).SeriesInstanceUID,)


def test_single_class_gives_one_segment(tmp_path: Path) -> None:
    path = write_dx(tmp_path / "f.dcm")
    labels = np.zeros((40, 50), np.int32)
    labels[10:30, 20:22] = 1
    m = measured(calcimage.load(path), labels, (P,))
    seg_path, sr_path = write_dicom_results(m, tmp_path / "o")
    seg = hd.seg.segread(seg_path)
    assert seg.number_of_segments == 1
    assert seg.get_segment_description(1).segmented_property_type == CODES.plaque
    sr = hd.sr.srread(sr_path)
    (cls,) = [g for g in sr.content.get_planar_roi_measurement_groups() if g.referenced_segmentation_frame]
    ref = cls.referenced_segmentation_frame[0].ReferencedSOPSequence[0]
    assert int(ref.ReferencedFrameNumber) == 1 and seg.NumberOfFrames == 1


def test_film_without_lesions_gets_sr_only(tmp_path: Path) -> None:
    path = write_dx(tmp_path / "clean.dcm")
    m = measured(calcimage.load(path), np.zeros((40, 50), np.int32), ())
    written = write_dicom_results(m, tmp_path / "o")
    assert written == [tmp_path / "o" / f"clean{SR_SUFFIX}"]
    sr = hd.sr.srread(written[0])
    assert sr.content.get_planar_roi_measurement_groups() == []
    (totals,) = sr.content.get_image_measurement_groups()
    assert group_num(totals, codes.SCT.Area) == [0.0]
    assert group_num(totals, CODES.count) == [0.0]


def test_image_library_written_when_the_source_describes_itself(tmp_path: Path) -> None:
    path = write_dx(tmp_path / "f.dcm", orientation=True)
    m = measured(calcimage.load(path), *three_lesions())
    seg_path, sr_path = write_dicom_results(m, tmp_path / "o")
    sr = pydicom.dcmread(sr_path)
    names = [item.ConceptNameCodeSequence[0].CodeMeaning for item in sr.ContentSequence]
    assert "Image Library" in names
    assert list(pydicom.dcmread(seg_path).PatientOrientation) == ["L", "F"]  # the film's
    # Without PatientOrientation the (optional) library is left out rather than failing.
    path2 = write_dx(tmp_path / "g.dcm", orientation=False)
    _, sr2_path = write_dicom_results(measured(calcimage.load(path2), *three_lesions()), tmp_path / "o")
    names2 = [item.ConceptNameCodeSequence[0].CodeMeaning for item in pydicom.dcmread(sr2_path).ContentSequence]
    assert "Image Library" not in names2 and "Imaging Measurements" in names2


# ------------------------------------------------------------------------------------------
# skipping, safety, determinism


def test_png_film_is_skipped_with_a_warning(tmp_path: Path) -> None:
    png = tmp_path / "film.png"
    cv2.imwrite(str(png), (np.arange(2000, dtype=np.uint16) % 50 * 100).reshape(40, 50))
    film = calcimage.load(png, spacing_mm=0.2)
    m = measured(film, *three_lesions())
    assert "not a DICOM film (png)" in dicom_skip_reason(m)
    with pytest.warns(CalcimageWarning, match=r"film: not a DICOM film \(png\)"):
        assert write_dicom_results(m, tmp_path / "o") == []
    assert not (tmp_path / "o").exists()


def test_film_without_spacing_is_skipped_with_a_warning(tmp_path: Path) -> None:
    path = write_dx(tmp_path / "nospace.dcm", spacing=None)
    film = calcimage.load(path)
    assert film.spacing_mm is None
    m = measured(film, *three_lesions())
    with pytest.warns(CalcimageWarning, match=r"nospace: no pixel spacing, so areas in mm² cannot be reported"):
        assert write_dicom_results(m, tmp_path / "o") == []
    assert not (tmp_path / "o").exists()


def test_reruns_give_the_same_uids_and_changes_give_new_ones(tmp_path: Path) -> None:
    path = write_dx(tmp_path / "f.dcm")
    film = calcimage.load(path)
    labels, kinds = three_lesions()
    first = [pydicom.dcmread(p) for p in write_dicom_results(measured(film, labels, kinds), tmp_path / "a")]
    again = [pydicom.dcmread(p) for p in write_dicom_results(measured(film, labels, kinds), tmp_path / "b")]
    assert [d.SOPInstanceUID for d in first] == [d.SOPInstanceUID for d in again]
    assert [d.SeriesInstanceUID for d in first] == [d.SeriesInstanceUID for d in again]
    grown = labels.copy()
    grown[10, 5:10] = 1
    changed = [pydicom.dcmread(p) for p in write_dicom_results(measured(film, grown, kinds), tmp_path / "c")]
    assert changed[0].SOPInstanceUID != first[0].SOPInstanceUID
    assert changed[1].SOPInstanceUID != first[1].SOPInstanceUID
    assert all(d.SOPInstanceUID.startswith("2.25.") and len(d.SOPInstanceUID) <= 64 for d in first)
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # no temp files left


def test_source_changed_after_measuring_is_refused(tmp_path: Path) -> None:
    path = write_dx(tmp_path / "f.dcm")
    m = measured(calcimage.load(path), *three_lesions())
    ds = pydicom.dcmread(path)
    ds.InstanceNumber = 2
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(OutputError, match="changed since it was measured"):
        write_dicom_results(m, tmp_path / "o")


def test_mismatched_labels_are_rejected(tmp_path: Path) -> None:
    path = write_dx(tmp_path / "f.dcm")
    labels, kinds = three_lesions()
    m = measured(calcimage.load(path), labels, kinds)
    bad = Measurement(m.film, m.segmentation, labels[:, :-1], m.lesions, ())
    with pytest.raises(ValueError, match=r"labels shape \(40, 49\) differs"):
        write_dicom_results(bad, tmp_path / "o")


# ------------------------------------------------------------------------------------------
# outline


@pytest.mark.parametrize(
    "pixels",
    [
        [(3, 4)],  # one pixel
        [(2, 2), (2, 3), (2, 4), (3, 2)],  # L
        [(2, 2), (3, 3), (4, 4)],  # diagonal chain: 8-connected
        [(1, 3), (2, 2), (2, 3), (2, 4), (3, 3)],  # plus
    ],
)
def test_outline_encloses_exactly_the_lesion_pixel_centres(pixels) -> None:
    mask = np.zeros((8, 9), bool)
    for r, c in pixels:
        mask[r, c] = True
    xy = lesion_outline(mask)
    assert xy.dtype == np.float32 and xy.shape[1] == 2
    np.testing.assert_array_equal(xy[0], xy[-1])
    raster = polygon2mask(mask.shape, np.stack([xy[:, 1] - 0.5, xy[:, 0] - 0.5], axis=1))
    np.testing.assert_array_equal(raster, mask)


def test_outline_of_one_pixel_is_a_diamond_in_dicom_coordinates() -> None:
    mask = np.zeros((5, 5), bool)
    mask[1, 3] = True  # row 1, col 3: centre at (x=3.5, y=1.5)
    xy = lesion_outline(mask)
    assert sorted(map(tuple, xy[:-1].tolist())) == [(3.0, 1.5), (3.5, 1.0), (3.5, 2.0), (4.0, 1.5)]


# ------------------------------------------------------------------------------------------
# longitudinal identity


def _series(tmp_path: Path, dates: list[str]) -> list[calcimage.Film]:
    study = generate_uid()
    return [calcimage.load(write_dx(tmp_path / f"t{i}.dcm", study_date=d, study_uid=study)) for i, d in enumerate(dates)]


def test_time_points_order_by_date_and_count_months(tmp_path: Path) -> None:
    f0, f1, f2 = _series(tmp_path, ["20250101", "20250402", "20251001"])
    labels, kinds = three_lesions()
    ms = [measured(f, labels, kinds) for f in (f2, f0, f1)]  # given out of order
    tps = time_points(ms)
    assert tps[film_key(f0)] == TimePoint(0, 0.0, dt.date(2025, 1, 1))
    assert tps[film_key(f1)] == TimePoint(1, round(91 / 30.4375, 2), dt.date(2025, 4, 2))
    assert tps[film_key(f2)].index == 2 and tps[film_key(f2)].months_since_baseline == round(273 / 30.4375, 2)
    assert tps[film_key(f2)].label == "T2"


def test_matched_lesions_keep_tracking_ids_across_time_points(tmp_path: Path) -> None:
    f0, f1 = _series(tmp_path, ["20250101", "20250402"])
    base_labels, base_kinds = three_lesions()
    base = measured(f0, base_labels, base_kinds)
    # Follow-up: baseline lesion 2 is now lesion 1, lesion 1 is now lesion 2, lesion 3
    # resolved, and a new lesion 3 appeared.
    fl = np.zeros((40, 50), np.int32)
    fl[21:24, 10:38] = 1
    fl[5:9, 5:9] = 2
    fl[35:38, 40:45] = 3
    follow = measured(f1, fl, (P, N, N))
    rows = [
        LesionChange(2, 1, Status.SHRUNK, 4.8, 3.36),
        LesionChange(1, 2, Status.SHRUNK, 1.0, 0.64),
        LesionChange(3, None, Status.RESOLVED, 0.4, None),
        LesionChange(None, 3, Status.NEW, None, 0.6),
    ]
    tracking = build_tracking([comparison(base, follow, rows)])
    assert build_tracking([comparison(base, follow, rows)]) == tracking  # deterministic
    assert tracking.lesion(f1, 1) == tracking.lesion(f0, 2)
    assert tracking.lesion(f1, 2) == tracking.lesion(f0, 1)
    assert tracking.lesion(f1, 3).identifier == "lesion T1-3"
    assert tracking.lesion(f1, 3).uid not in {tracking.lesion(f0, k).uid for k in (1, 2, 3)}
    # An untracked run of the baseline names its lesions exactly as the tracked run does.
    assert [TrackingMap().lesion(f0, k) for k in (1, 2, 3)] == [tracking.lesion(f0, k) for k in (1, 2, 3)]

    out0 = write_dicom_results(base, tmp_path / "o0", tracking=tracking)
    out1 = write_dicom_results(follow, tmp_path / "o1", tracking=tracking)
    sr0, sr1 = hd.sr.srread(out0[1]).content, hd.sr.srread(out1[1]).content

    def ids(report) -> list[tuple[str, str]]:
        groups = report.get_planar_roi_measurement_groups() + report.get_image_measurement_groups()
        return [(g.tracking_identifier, g.tracking_uid) for g in groups]

    ids0, ids1 = ids(sr0), ids(sr1)
    # per-lesion groups first (in lesion order), then classes, then the film total
    assert ids1[0] == ids0[1] and ids1[1] == ids0[0]
    assert ids1[2][0] == "lesion T1-3"
    assert ids1[3:] == ids0[3:]  # class groups and total keep their identity too
    seg0, seg1 = hd.seg.segread(out0[0]), hd.seg.segread(out1[0])
    assert seg0.get_tracking_ids() == seg1.get_tracking_ids()
    tp1 = time_point_items(sr1.get_image_measurement_groups()[0])
    assert tp1 == {
        "Time Point": "T1",
        "Time Point Order": 2.0,
        "Subject Time Point Identifier": "2025-04-02",
        "Longitudinal Temporal Offset from Event": round(91 / 30.4375, 2),
    }


def test_tracking_chains_through_intermediate_follow_ups(tmp_path: Path) -> None:
    f0, f1, f2 = _series(tmp_path, ["20250101", "20250401", "20251001"])
    one = np.zeros((40, 50), np.int32)
    one[5:10, 5:10] = 1
    two = one.copy()
    two[30:34, 30:34] = 2
    m0, m1, m2 = measured(f0, one, (N,)), measured(f1, two, (N, N)), measured(f2, two, (N, N))
    chain = [
        comparison(m1, m2, [LesionChange(1, 1, Status.STABLE, 1, 1), LesionChange(2, 2, Status.STABLE, 0.64, 0.64)]),
        comparison(m0, m1, [LesionChange(1, 1, Status.STABLE, 1, 1), LesionChange(None, 2, Status.NEW, None, 0.64)]),
    ]
    tracking = build_tracking(chain)
    assert tracking.lesion(f2, 1) == tracking.lesion(f1, 1) == tracking.lesion(f0, 1)
    assert tracking.lesion(f2, 2) == tracking.lesion(f1, 2)
    assert tracking.lesion(f2, 2).identifier == "lesion T1-2"
    assert tracking.group(f2) == tracking.group(f1) == film_key(f0)
    assert tracking.time_point(f2).index == 2


def test_merged_lesions_give_each_identity_at_most_once_per_film(tmp_path: Path) -> None:
    f0, f1 = _series(tmp_path, ["20250101", "20250401"])
    base = np.zeros((40, 50), np.int32)
    base[5:8, 5:8] = 1
    base[5:8, 10:14] = 2
    merged = np.zeros((40, 50), np.int32)
    merged[5:8, 5:14] = 1
    m0, m1 = measured(f0, base, (N, N)), measured(f1, merged, (P,))
    rows = [LesionChange(1, 1, Status.GROWN, 0.36, 1.08), LesionChange(2, 1, Status.GROWN, 0.48, 1.08)]
    tracking = build_tracking([comparison(m0, m1, rows)])
    assert tracking.lesion(f1, 1) == tracking.lesion(f0, 2)  # the larger partner wins


def test_split_lesion_identity_goes_to_the_larger_part(tmp_path: Path) -> None:
    f0, f1 = _series(tmp_path, ["20250101", "20250401"])
    whole = np.zeros((40, 50), np.int32)
    whole[5:8, 5:14] = 1
    parts = np.zeros((40, 50), np.int32)
    parts[5:8, 5:8] = 1
    parts[5:8, 10:14] = 2
    m0, m1 = measured(f0, whole, (P,)), measured(f1, parts, (N, N))
    rows = [LesionChange(1, 1, Status.SHRUNK, 1.08, 0.36), LesionChange(1, 2, Status.SHRUNK, 1.08, 0.48)]
    tracking = build_tracking([comparison(m0, m1, rows)])
    assert tracking.lesion(f1, 2) == tracking.lesion(f0, 1)
    assert tracking.lesion(f1, 1).identifier == "lesion T1-1"


# ------------------------------------------------------------------------------------------
# real film


def test_real_cr_film_round_trip(real_dir: Path, tmp_path: Path) -> None:
    path = real_dir / "CR1_6154_16x16_MONO1_rescale.dcm"
    film = calcimage.load(path)
    assert film.spacing_mm == (0.1, 0.1)
    labels = np.zeros(film.shape, np.int32)
    labels[2:5, 3:7] = 1
    labels[10:12, 10:13] = 2
    m = measured(film, labels, (N, P))
    seg_path, sr_path = write_dicom_results(m, tmp_path)
    src = pydicom.dcmread(path)
    seg = hd.seg.segread(seg_path)
    assert seg.get_source_image_uids()[0][2] == src.SOPInstanceUID
    masks = seg.get_pixels_by_source_instance([src.SOPInstanceUID], segment_numbers=[1, 2])
    np.testing.assert_array_equal(masks[0, ..., 0] > 0, labels == 1)
    sr = hd.sr.srread(sr_path)
    areas = [group_num(g, codes.SCT.Area)[0] for g in sr.content.get_planar_roi_measurement_groups()[:2]]
    assert areas == [pytest.approx(12 * 0.01), pytest.approx(6 * 0.01)]
    assert str(pydicom.dcmread(sr_path).PatientName) == str(src.PatientName)


# ------------------------------------------------------------------------------------------
# from the CLI's results folders


def _write_outputs(folder: Path, m: Measurement) -> None:
    from calcimage.report import write_measurement

    write_measurement(folder, m, input_name="x")


def test_sr_numbers_equal_lesions_csv(tmp_path: Path) -> None:
    import csv

    path = write_dx(tmp_path / "f.dcm", spacing=(0.143, 0.143))  # areas with many decimals
    m = measured(calcimage.load(path), *three_lesions(), grades=[2, 3, 1])
    _write_outputs(tmp_path / "res", m)
    rebuilt = measurement_from_outputs(path, tmp_path / "res")
    np.testing.assert_array_equal(rebuilt.labels, m.labels)
    assert [l.kind for l in rebuilt.lesions] == [l.kind for l in m.lesions]
    written = write_dicom_results(rebuilt, tmp_path / "res", stem="calcinosis")
    assert [p.name for p in written] == ["calcinosis.seg.dcm", "calcinosis.sr.dcm"]
    with open(tmp_path / "res" / "lesions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    groups = hd.sr.srread(written[1]).content.get_planar_roi_measurement_groups()
    for row, group in zip(rows, groups):
        assert group.tracking_identifier == f"lesion {row['lesion_id']}"
        assert group.finding_type == {"nodule": CODES.nodule, "plaque": CODES.plaque}[row["kind"]]
        assert group_num(group, codes.SCT.Area) == [float(row["area_mm2"])]
        assert group_num(group, CODES.density_grade) == [float(row["density_grade"])]
        assert group_num(group, CODES.burden) == [float(row["burden"])]
    # the same numbers straight from the in-memory Measurement (rounded as the CSV is)
    direct = write_dicom_results(m, tmp_path / "direct")
    direct_groups = hd.sr.srread(direct[1]).content.get_planar_roi_measurement_groups()
    assert [group_num(g, codes.SCT.Area) for g in direct_groups] == [group_num(g, codes.SCT.Area) for g in groups]


def test_results_folder_with_pairs_gets_tracked_dicom(tmp_path: Path) -> None:
    import json

    f0, f1, f2 = _series(tmp_path, ["20250101", "20250401", "20251001"])
    one = np.zeros((40, 50), np.int32)
    one[5:10, 5:10] = 1
    two = one.copy()
    two[30:34, 30:34] = 2
    out = tmp_path / "out"
    for film, labels, kinds, folder in ((f0, one, (N,), "g/a"), (f1, two, (N, N), "g/b"), (f2, two, (N, N), "g/c")):
        _write_outputs(out / folder, measured(film, labels, kinds))
    rows_b = [{"baseline_id": 1, "followup_id": 1, "area_baseline_mm2": 1.0, "area_followup_mm2": 1.0},
              {"baseline_id": None, "followup_id": 2, "area_baseline_mm2": None, "area_followup_mm2": 0.64}]
    (out / "g/compare_b").mkdir(parents=True)
    (out / "g/compare_b/comparison.json").write_text(json.dumps({"lesions": rows_b}))
    png = tmp_path / "extra.png"
    cv2.imwrite(str(png), (np.arange(2000, dtype=np.uint16) % 50 * 100).reshape(40, 50))
    _write_outputs(out / "h/png", measured(calcimage.load(png, spacing_mm=0.2), one, (N,)))
    films = [(f0.path, "g/a"), (f1.path, "g/b"), (f2.path, "g/c"), (png, "h/png")]
    # the pair b -> c failed: no comparison.json; its lesions get new identities at T2
    pairs = [("g/a", "g/b", "g/compare_b"), ("g/a", "g/c", "g/compare_c")]

    written, messages = write_dicom_for_outputs(out, films, pairs)

    assert len(written) == 6 and all(p.parent.name in "abc" for p in written)
    assert len(messages) == 2
    assert messages[0].startswith("DICOM SEG/SR skipped: extra: not a DICOM film (png)")
    assert messages[1].startswith("g/compare_c: no comparison.json (the comparison failed)")

    def lesion_ids(folder: str) -> list[tuple[str, str]]:
        report = hd.sr.srread(out / folder / "calcinosis.sr.dcm").content
        return [(g.tracking_identifier, g.tracking_uid) for g in report.get_planar_roi_measurement_groups()[:2]]

    a, b, c = lesion_ids("g/a")[:1], lesion_ids("g/b"), lesion_ids("g/c")
    assert b[0] == a[0] and b[1][0] == "lesion T1-2"
    assert [t for t, _ in c] == ["lesion T2-1", "lesion T2-2"]
    totals = hd.sr.srread(out / "g/c/calcinosis.sr.dcm").content.get_image_measurement_groups()[0]
    assert time_point_items(totals)["Time Point"] == "T2"
    assert time_point_items(totals)["Longitudinal Temporal Offset from Event"] == round(273 / 30.4375, 2)


def test_pair_writer_names_files_and_tracks(tmp_path: Path) -> None:
    f0, f1 = _series(tmp_path, ["20250101", "20250302"])
    one = np.zeros((40, 50), np.int32)
    one[5:10, 5:10] = 1
    m0, m1 = measured(f0, one, (N,)), measured(f1, one, (N,))
    rows = [LesionChange(1, 1, Status.STABLE, 1.0, 1.0)]
    written, messages = write_dicom_for_pair(m0, m1, rows, tmp_path / "cmp")
    assert messages == []
    assert [p.name for p in written] == ["baseline.seg.dcm", "baseline.sr.dcm", "followup.seg.dcm", "followup.sr.dcm"]
    g0 = hd.sr.srread(written[1]).content.get_planar_roi_measurement_groups()[0]
    g1 = hd.sr.srread(written[3]).content.get_planar_roi_measurement_groups()[0]
    assert (g0.tracking_identifier, g0.tracking_uid) == (g1.tracking_identifier, g1.tracking_uid)
    assert time_point_items(g1)["Longitudinal Temporal Offset from Event"] == round(60 / 30.4375, 2)
    # One film failing does not stop the other: it becomes a message.
    ds = pydicom.dcmread(f1.path)
    ds.InstanceNumber = 5
    ds.save_as(f1.path, enforce_file_format=True)
    written, messages = write_dicom_for_pair(m0, m1, rows, tmp_path / "cmp2")
    assert [p.name for p in written] == ["baseline.seg.dcm", "baseline.sr.dcm"]
    assert len(messages) == 1 and "not written for the followup" in messages[0] and "changed since" in messages[0]


def test_tracking_map_pickles_for_worker_processes(tmp_path: Path) -> None:
    import pickle

    f0, f1 = _series(tmp_path, ["20250101", "20250302"])
    one = np.zeros((40, 50), np.int32)
    one[5:10, 5:10] = 1
    tracking = build_tracking([(measured(f0, one, (N,)), measured(f1, one, (N,)), [LesionChange(1, 1, Status.STABLE, 1, 1)])])
    assert pickle.loads(pickle.dumps(tracking)) == tracking


def test_clean_source_gives_no_library_remarks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_dx(tmp_path / "f.dcm", orientation=True)
    m = measured(calcimage.load(path), *three_lesions())
    with caplog.at_level("INFO", logger="calcimage.report.dicom"):
        write_dicom_results(m, tmp_path / "o")
    assert [r.getMessage() for r in caplog.records if "DICOM SEG/SR:" in r.getMessage()] == []


def test_invalid_patient_values_are_left_empty_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_dx(tmp_path / "f.dcm")
    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns while we build the odd source on purpose
        ds.PatientBirthDate = "00000000"  # seen in real films
        ds.AccessionNumber = "d14a028c2a3a2bc9476102bb288234c415a2b01f828ea62ac5b3e42f"  # 56 > 16 chars
        ds.PatientName = "ANON-1234"  # one component: pydicom remarks on it, harmless
        ds.save_as(path, enforce_file_format=True)
    film = calcimage.load(path)
    m = measured(film, *three_lesions())
    with caplog.at_level("INFO", logger="calcimage.report.dicom"):
        with pytest.warns(CalcimageWarning, match=r"f: invalid PatientBirthDate, AccessionNumber in the source"):
            seg_path, sr_path = write_dicom_results(m, tmp_path / "o")
    for out in (seg_path, sr_path):
        out_ds = pydicom.dcmread(out)
        assert (out_ds.PatientBirthDate, out_ds.AccessionNumber) == ("", "")
        assert str(out_ds.PatientName) == "ANON-1234"
    remarks = [r.getMessage() for r in caplog.records if "DICOM SEG/SR: UserWarning" in r.getMessage()]
    assert remarks and len(remarks) == len(set(remarks))  # logged, once each


@pytest.mark.slow
def test_sample_films_end_to_end_keep_tracking_ids(sample_dir: Path, tmp_path: Path) -> None:
    """segment -> measure -> compare -> SEG/SR on a synthetic patient's baseline and 3-month film."""
    from calcimage.compare import compare

    files = [sample_dir / "SYN002_R_AP_2025-02-03.dcm", sample_dir / "SYN002_R_AP_2025-05-05.dcm"]
    if not all(f.is_file() for f in files):
        pytest.skip("sample_images/SYN002 films are absent")
    base, follow = (calcimage.measure(f, calcimage.segment(f)) for f in map(calcimage.load, files))
    with warnings.catch_warnings():
        # compare warns about lesions outside the other film's field; that is its business
        warnings.simplefilter("ignore", CalcimageWarning)
        comp = compare(base, follow)
    tracking = build_tracking([comp])
    reports, segs = [], []
    for m, stem in ((base, "t0"), (follow, "t1")):
        seg_path, sr_path = write_dicom_results(m, tmp_path, tracking=tracking, stem=stem)
        segs.append(hd.seg.segread(seg_path))
        reports.append(hd.sr.srread(sr_path).content)
        # every lesion's numbers, as lesions.csv writes them (6 decimals)
        groups = reports[-1].get_planar_roi_measurement_groups()[: m.lesion_count]
        for lesion, group in zip(m.lesions, groups):
            assert group_num(group, codes.SCT.Area) == [round(lesion.area_mm2, 6)]
            assert group_num(group, CODES.density_grade) == [lesion.density_grade]
            assert group.finding_type == {N: CODES.nodule, P: CODES.plaque}[lesion.kind]
        # segment masks = labels of that class
        numbers = segs[-1].get_segment_numbers()
        masks = segs[-1].get_pixels_by_source_instance([m.film.metadata.sop_instance_uid], segment_numbers=numbers)
        for i, number in enumerate(numbers):
            kind = N if segs[-1].get_segment_description(number).segmented_property_type == CODES.nodule else P
            ids = [l.lesion_id for l in m.lesions if l.kind is kind]
            np.testing.assert_array_equal(masks[0, ..., i] > 0, np.isin(m.labels, ids))
    ident0 = {
        l.lesion_id: (g.tracking_identifier, g.tracking_uid)
        for l, g in zip(base.lesions, reports[0].get_planar_roi_measurement_groups())
    }
    ident1 = {
        l.lesion_id: (g.tracking_identifier, g.tracking_uid)
        for l, g in zip(follow.lesions, reports[1].get_planar_roi_measurement_groups())
    }
    partners: dict[int, set[int]] = {}
    for row in comp.lesions:
        if row.baseline_id is not None and row.followup_id is not None:
            partners.setdefault(row.followup_id, set()).add(row.baseline_id)
    assert partners, "the sample pair should have matched lesions"
    assert len({uid for _, uid in ident1.values()}) == follow.lesion_count  # each identity once per film
    for lesion_id, identity in ident1.items():
        partner_ids = {ident0[b] for b in partners.get(lesion_id, set())}
        if identity in ident0.values():
            assert identity in partner_ids  # inherited only from a lesion it was matched with
        else:
            assert identity[0] == f"lesion T1-{lesion_id}"
            # new identity although matched: every partner's identity went to another lesion
            assert partner_ids <= set(ident1.values())


def test_frame_of_reference_without_plane_geometry_gives_a_pixel_grid_seg(tmp_path: Path) -> None:
    path = write_dx(tmp_path / "f.dcm")
    ds = pydicom.dcmread(path)
    ds.FrameOfReferenceUID = generate_uid()  # some DX carry one, with no plane position/orientation
    ds.save_as(path, enforce_file_format=True)
    labels, kinds = three_lesions()
    seg_path, _ = write_dicom_results(measured(calcimage.load(path), labels, kinds), tmp_path / "o")
    seg = hd.seg.segread(seg_path)
    assert "FrameOfReferenceUID" not in seg
    masks = seg.get_pixels_by_source_instance([ds.SOPInstanceUID], segment_numbers=[1, 2])
    np.testing.assert_array_equal(masks[0, ..., 1] > 0, labels == 2)


def test_png_baseline_still_sets_the_dicom_follow_up_time_point(tmp_path: Path) -> None:
    import json

    png = tmp_path / "base.png"
    cv2.imwrite(str(png), (np.arange(2000, dtype=np.uint16) % 50 * 100).reshape(40, 50))
    png.with_suffix(".json").write_text(json.dumps({"spacing_mm": [0.2, 0.2], "study_date": "2025-01-01"}))
    base_film = calcimage.load(png)
    assert base_film.metadata.study_date == dt.date(2025, 1, 1)
    follow_film = calcimage.load(write_dx(tmp_path / "follow.dcm", study_date="20250401"))
    one = np.zeros((40, 50), np.int32)
    one[5:10, 5:10] = 1
    out = tmp_path / "out"
    _write_outputs(out / "g/a", measured(base_film, one, (N,)))
    _write_outputs(out / "g/b", measured(follow_film, one, (N,)))
    (out / "g/cmp").mkdir()
    rows = [{"baseline_id": 1, "followup_id": 1, "area_baseline_mm2": 1.0, "area_followup_mm2": 1.0}]
    (out / "g/cmp/comparison.json").write_text(json.dumps({"lesions": rows}))
    written, messages = write_dicom_for_outputs(out, [(png, "g/a"), (follow_film.path, "g/b")], [("g/a", "g/b", "g/cmp")])

    assert [p.parent.name for p in written] == ["b", "b"]
    assert len(messages) == 1 and "not a DICOM film (png)" in messages[0]
    report = hd.sr.srread(out / "g/b/calcinosis.sr.dcm").content
    (group,) = [g for g in report.get_planar_roi_measurement_groups() if g.tracking_identifier.startswith("lesion")]
    assert group.tracking_identifier == "lesion 1"  # inherited from the PNG baseline's lesion 1
    assert time_point_items(group)["Time Point"] == "T1"


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) is not installed")
def test_objects_pass_the_dicom3tools_iod_validator(tmp_path: Path) -> None:
    """dciodvfy checks the SEG and SR against the IODs: no errors; the only warnings are about
    calcimage's private coding scheme, which dciodvfy cannot know."""
    written = []
    for name, orientation in (("a", True), ("b", False)):
        path = write_dx(tmp_path / f"{name}.dcm", orientation=orientation)
        written += write_dicom_results(measured(calcimage.load(path), *three_lesions()), tmp_path / "o")
    for out in written:
        run = subprocess.run(["dciodvfy", str(out)], capture_output=True, text=True, timeout=60)
        lines = (run.stdout + run.stderr).splitlines()
        assert not [l for l in lines if l.startswith("Error")], (out.name, lines)
        assert all("99CALCIMAGE" in l for l in lines if l.startswith("Warning")), (out.name, lines)


# ------------------------------------------------------------------------------------------
# CLI: --dicom-out on measure, compare and study


def _phantom_dx(path: Path, *, followup: bool, study_date: str, study_uid: str) -> Path:
    """A 400 x 400 phantom film (0.3 mm) as a DX with the UIDs a SEG/SR reference needs."""
    from calcimage.phantom import PhantomParams, make_followup, make_phantom

    params = PhantomParams(rows=400, cols=400, spacing_mm=0.3, n_nodules=4, n_plaques=2)
    base = make_phantom(1, params)
    film = make_followup(base, 2).film if followup else base.film
    pixels = np.clip(np.round(film.pixels), 0, 65535).astype(np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_dx(path, rows=400, cols=400, spacing=(0.3, 0.3), study_date=study_date, study_uid=study_uid)
    ds = pydicom.dcmread(path)
    ds.BitsStored, ds.HighBit = 16, 15
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def dx_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("dx")
    study = generate_uid()
    return (
        _phantom_dx(folder / "P01" / "base.dcm", followup=False, study_date="20260105", study_uid=study),
        _phantom_dx(folder / "P01" / "follow.dcm", followup=True, study_date="20260406", study_uid=study),
    )


def _cli(*args: object):
    from typer.testing import CliRunner

    from calcimage.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _sr_ids(path: Path) -> dict[str, str]:
    report = hd.sr.srread(path).content
    return {g.tracking_identifier: g.tracking_uid for g in report.get_planar_roi_measurement_groups()}


@pytest.mark.slow  # the CLI starts a worker process
def test_cli_measure_dicom_out(
    dx_pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CALCIMAGE_SALT", "test-salt")
    png = tmp_path / "in" / "plain.png"
    png.parent.mkdir()
    cv2.imwrite(str(png), (np.arange(160000, dtype=np.uint32) % 4000).astype(np.uint16).reshape(400, 400))
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="calcimage"):
        result = _cli("measure", dx_pair[0], png, "--out", out, "--spacing", 0.3, "--workers", 1, "--dicom-out")
    assert result.exit_code == 0, result.output
    seg_path, sr_path = out / "base" / "calcinosis.seg.dcm", out / "base" / "calcinosis.sr.dcm"
    assert seg_path.is_file() and sr_path.is_file()
    assert not list((out / "plain").glob("*.dcm"))
    assert any("plain: not a DICOM film (png)" in r.getMessage() for r in caplog.records)
    with open(out / "base" / "lesions.csv", newline="") as fh:
        import csv

        rows = list(csv.DictReader(fh))
    groups = hd.sr.srread(sr_path).content.get_planar_roi_measurement_groups()
    assert len(rows) > 0
    assert [group_num(g, codes.SCT.Area)[0] for g in groups[: len(rows)]] == [float(r["area_mm2"]) for r in rows]
    seg = hd.seg.segread(seg_path)
    labels = cv2.imread(str(out / "base" / "labels.png"), cv2.IMREAD_UNCHANGED)
    masks = seg.get_pixels_by_source_instance([pydicom.dcmread(dx_pair[0]).SOPInstanceUID], segment_numbers=seg.get_segment_numbers())
    np.testing.assert_array_equal(masks[0].max(axis=-1) > 0, labels > 0)


def test_pair_that_segmented_a_film_again_gives_no_tracking(tmp_path: Path) -> None:
    """A comparison with ``bone_shared`` names the ids of a film segmented again, not of the
    film's folder: its matches must not hand identities to unrelated lesions."""
    import json

    f0, f1 = _series(tmp_path, ["20250101", "20250401"])
    one = np.zeros((40, 50), np.int32)
    one[5:10, 5:10] = 1
    out = tmp_path / "out"
    for film, folder in ((f0, "g/a"), (f1, "g/b")):
        _write_outputs(out / folder, measured(film, one, (N,)))
    rows = [{"baseline_id": 1, "followup_id": 1, "area_baseline_mm2": 1.0, "area_followup_mm2": 1.0}]
    (out / "g/cmp").mkdir(parents=True)
    (out / "g/cmp/comparison.json").write_text(json.dumps({"lesions": rows, "bone_shared": ["followup"]}))

    written, messages = write_dicom_for_outputs(out, [(f0.path, "g/a"), (f1.path, "g/b")], [("g/a", "g/b", "g/cmp")])

    assert len(written) == 4
    assert messages == [
        "g/cmp: the comparison segmented the followup again with the other film's bone, so its "
        "lesion ids are not the film folder's; the follow-up's lesions get new tracking ids"
    ]
    follow = hd.sr.srread(out / "g/b/calcinosis.sr.dcm").content.get_planar_roi_measurement_groups()
    assert follow[0].tracking_identifier == "lesion T1-1"


def test_cli_compare_dicom_out(dx_pair, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    result = _cli("compare", dx_pair[0], dx_pair[1], "--out", out, "--dicom-out")
    assert result.exit_code == 0, result.output
    import json

    data = json.loads((out / "comparison.json").read_text())
    # an SR per film; a SEG only for a film with lesions (the segmentation decides how many)
    expected = [f"{side}.{kind}.dcm" for side in ("baseline", "followup") for kind in ("seg", "sr")
                if kind == "sr" or data[side]["lesion_count"] > 0]
    assert sorted(p.name for p in out.glob("*.dcm")) == sorted(expected)

    def lesion_ids(path: Path) -> list[tuple[str, str]]:
        groups = hd.sr.srread(path).content.get_planar_roi_measurement_groups()
        return [(g.tracking_identifier, g.tracking_uid) for g in groups if g.tracking_identifier.startswith("lesion ")]

    base_ids, follow_ids = lesion_ids(out / "baseline.sr.dcm"), lesion_ids(out / "followup.sr.dcm")
    rows = [r for r in data["lesions"] if r["baseline_id"] is not None and r["followup_id"] is not None]
    for row in rows:
        one_to_one = sum(r["followup_id"] == row["followup_id"] for r in rows) == 1 and sum(
            r["baseline_id"] == row["baseline_id"] for r in rows
        ) == 1
        if one_to_one:
            assert follow_ids[row["followup_id"] - 1] == base_ids[row["baseline_id"] - 1]
    new_ids = {r["followup_id"] for r in data["lesions"] if r["baseline_id"] is None}
    for lesion_id in new_ids:
        assert follow_ids[lesion_id - 1][0] == f"lesion T1-{lesion_id}"


@pytest.mark.slow  # the CLI starts worker processes
def test_cli_study_dicom_out(dx_pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALCIMAGE_SALT", "test-salt")
    out = tmp_path / "study"
    result = _cli("study", dx_pair[0].parent, "--out", out, "--workers", 1, "--dicom-out")
    assert result.exit_code == 0, result.output
    import json

    srs = sorted(out.rglob("calcinosis.sr.dcm"))
    with_lesions = [p.parent for p in srs if json.loads((p.parent / "summary.json").read_text())["lesion_count"] > 0]
    assert len(srs) == 2 and sorted(p.parent for p in out.rglob("calcinosis.seg.dcm")) == sorted(with_lesions)
    by_tp = {}
    for path in srs:
        totals = hd.sr.srread(path).content.get_image_measurement_groups()[0]
        by_tp[time_point_items(totals)["Time Point"]] = path
    assert sorted(by_tp) == ["T0", "T1"]
    assert time_point_items(hd.sr.srread(by_tp["T1"]).content.get_image_measurement_groups()[0])[
        "Longitudinal Temporal Offset from Event"
    ] == round(91 / 30.4375, 2)
    base_ids, follow_ids = _sr_ids(by_tp["T0"]), _sr_ids(by_tp["T1"])
    pair = json.loads(next(out.rglob("comparison.json")).read_text())
    if any(r["baseline_id"] is not None and r["followup_id"] is not None for r in pair["lesions"]):
        assert set(base_ids.values()) & set(follow_ids.values())  # matched lesions share UIDs
    assert all(k.startswith("lesion T1-") for k in follow_ids if k not in base_ids and k.startswith("lesion"))
    totals = [hd.sr.srread(by_tp[t]).content.get_image_measurement_groups()[0] for t in ("T0", "T1")]
    assert totals[0].tracking_uid == totals[1].tracking_uid  # the film total keeps its identity


def test_source_without_type2_patient_attributes(tmp_path: Path) -> None:
    """Real films often omit type 2 attributes (PatientSex, AccessionNumber, ...): SEG and SR
    are still written, with those attributes present and empty."""
    path = write_dx(tmp_path / "f.dcm")
    ds = pydicom.dcmread(path)
    missing = ("PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "ReferringPhysicianName")
    for keyword in missing:
        if keyword in ds:
            delattr(ds, keyword)
    ds.save_as(path, enforce_file_format=True)
    m = measured(calcimage.load(path), *three_lesions())
    seg_path, sr_path = write_dicom_results(m, tmp_path / "o")
    for out in (seg_path, sr_path):
        out_ds = pydicom.dcmread(out)
        assert all(out_ds[k].value in ("", None) for k in missing)
        assert out_ds.PatientID == ds.PatientID
