"""Library side of ``calcimage study`` (and the per-film work ``calcimage measure`` shares).

Finding films
    :func:`discover_films` walks a folder recursively (following symlinked folders, each real
    folder visited once, so symlink loops are harmless) and keeps DICOM and image files:
    suffixes ``.dcm .dicom .dic .png .tif .tiff .jpg .jpeg``, and files without a suffix that
    carry the DICOM ``DICM`` signature. Hidden files and folders (``.name``) and calcimage's own
    results folders (holding ``.calcimage/marker.json``) are skipped.

Grouping
    A film belongs to the group *patient + laterality + view*. The values come from DICOM
    (PatientID, ImageLaterality/Laterality, ViewPosition), from a PNG/TIFF/JPEG's sidecar
    ``NAME.json`` (``patient_id``, ``laterality``, ``view_position``, ``study_date``) or, for
    what neither gives, from the file name convention (:data:`FILENAME_CONVENTION`)::

        <patient>_<laterality>_<view>_<YYYY-MM-DD or YYYYMMDD>[_anything].<ext>
        e.g.  P01_L_PA_2026-01-15.png

    Within a group films are ordered by date (undated films last, then by path); the first is
    the baseline and every later film is compared with it.

Naming and privacy
    Group folders are ``<patient>_<laterality>_<view>`` with the patient pseudonymised (see
    :mod:`calcimage.privacy`) unless ``keep_ids``; film folders are ``<date>_<sha256[:8]>``
    (``undated_<sha8>``), pair folders ``compare_<followup film>``, so no file name or DICOM
    text reaches a path unsanitised. Without ``keep_ids`` a film's ``input`` is recorded as
    ``<group>/<film>`` (its sha256 identifies the file), since file names often carry names.

Resuming
    Every finished film and pair leaves a cache entry (:mod:`calcimage.report.outdir`) keyed by
    the input sha256(s) and :meth:`RunSettings.key`; a rerun reuses those and computes the rest.

Measuring once
    A study film's job also leaves, beside its cache entry, what a comparison needs of the
    measurement besides the film and labels.png (lesion table, region totals, parameters, the
    collimation and marker masks): :func:`save_compare_data`. The pair job loads the two films
    again (decoding is cheap next to segmenting) and rebuilds their measurements from it
    (:func:`rebuilt_measurement`), so each film is segmented once per study. When that data is
    missing or does not fit (an older results folder, a changed file), the film is measured again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import logging
import os
import re
import stat
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calcimage.errors import CalcimageError
from calcimage.io.load import IMAGE_SUFFIXES
from calcimage.params import Config
from calcimage.privacy import group_name, salt_fingerprint, sanitize_component
from calcimage.report import COMPARE_FILES, MEASURE_FILES
from calcimage.report.atomic import write_bytes
from calcimage.report.outdir import cache_key, cache_path, read_cache, write_cache

__all__ = [
    "FILENAME_CONVENTION",
    "FILM_SUFFIXES",
    "RunSettings",
    "FilmResult",
    "PairResult",
    "Identity",
    "discover_films",
    "parse_filename",
    "film_identity",
    "file_sha256",
    "unique_folder_names",
    "measure_file",
    "save_compare_data",
    "rebuilt_measurement",
    "lean_measurement",
    "compare_measured",
    "measure_film_job",
    "cached_film",
    "cached_pair",
    "compare_pair_job",
    "order_groups",
    "study_rows",
    "months_between",
]

logger = logging.getLogger(__name__)

FILM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".dic") + IMAGE_SUFFIXES

#: File-name convention used for whatever the DICOM header or sidecar does not say.
FILENAME_CONVENTION = re.compile(
    r"^(?P<patient>[A-Za-z0-9-]+)_(?P<laterality>[LRBU])_(?P<view>[A-Za-z0-9-]+)_"
    r"(?P<date>\d{4}-\d{2}-\d{2}|\d{8})(?:_.*)?$"
)
_DAYS_PER_MONTH = 365.25 / 12


# --------------------------------------------------------------------------- discovery


def _is_regular(path: Path) -> bool:
    # Opening a FIFO blocks and a device never ends: only regular files are read here.
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _has_dicom_signature(path: Path) -> bool:
    if not _is_regular(path):
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return True  # unreadable: keep it so the failure is reported, not silently skipped
    return head[128:132] == b"DICM"


def discover_films(folder: str | os.PathLike[str]) -> list[Path]:
    """Every film under ``folder`` (recursively), sorted by path.

    Symlinked folders are followed but each real folder is visited once, so a symlink loop
    ends the walk instead of recursing forever. Unreadable folders are skipped with a warning
    in the log.
    """
    root = Path(folder)
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()

    def onerror(exc: OSError) -> None:
        logger.warning("cannot list %s: %s", exc.filename, exc.strerror)

    for current, dirs, files in os.walk(root, followlinks=True, onerror=onerror):
        try:
            st = os.stat(current)
        except OSError:
            dirs[:] = []
            continue
        ident = (st.st_dev, st.st_ino)
        if ident in seen:
            dirs[:] = []
            continue
        seen.add(ident)
        if os.path.isfile(os.path.join(current, ".calcimage", "marker.json")):
            # A calcimage results folder: its labels and overlays are not films.
            logger.warning("%s: skipped, it is a calcimage results folder", current)
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(current) / name
            suffix = path.suffix.lower()
            if suffix in FILM_SUFFIXES or (suffix == "" and _has_dicom_signature(path)):
                found.append(path)
    return sorted(found, key=lambda p: str(p))


def file_sha256(path: str | os.PathLike[str]) -> str | None:
    """sha256 of a file's bytes, or None when it cannot be read."""
    if not _is_regular(Path(path)):
        return None
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def unique_folder_names(paths: Sequence[Path]) -> list[str]:
    """Output folder name per input: its sanitised stem, with ``_2``, ``_3``… on collisions."""
    names: list[str] = []
    used: set[str] = set()
    for path in paths:
        base = sanitize_component(path.stem, fallback="film")
        name, k = base, 2
        while name.lower() in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name.lower())
        names.append(name)
    return names


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class Identity:
    """What grouping and ordering need of a film."""

    patient_id: str | None
    laterality: str | None
    view: str | None
    date: dt.date | None


def parse_filename(path: str | os.PathLike[str]) -> Identity | None:
    """Identity from the :data:`FILENAME_CONVENTION`, or None when the name does not follow it."""
    m = FILENAME_CONVENTION.match(Path(path).stem)
    if m is None:
        return None
    text = m.group("date").replace("-", "")
    try:
        date = dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        date = None
    return Identity(m.group("patient"), m.group("laterality"), m.group("view"), date)


def film_identity(film: Any) -> Identity:
    """Identity from the film's metadata, completed from the file name convention."""
    meta = film.metadata
    from_name = parse_filename(film.path) if film.path is not None else None
    fallback = from_name or Identity(None, None, None, None)
    return Identity(
        patient_id=meta.patient_id or fallback.patient_id,
        laterality=(meta.laterality or fallback.laterality or None),
        view=(meta.view_position or fallback.view or None),
        date=meta.study_date or fallback.date,
    )


def months_between(start: dt.date | None, end: dt.date | None) -> float | None:
    """Months from ``start`` to ``end`` (days / 30.4375), rounded to 0.01; None if either is missing."""
    if start is None or end is None:
        return None
    return round((end - start).days / _DAYS_PER_MONTH, 2)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class RunSettings:
    """Everything besides the input bytes that shapes a result (picklable for workers).

    ``salt`` is the pseudonymisation secret: passed to workers, never written out.
    """

    config: Config = field(default_factory=Config)
    spacing_mm: float | None = None
    regions: str | None = None
    regions_sha256: str | None = None
    keep_ids: bool = False
    salt: str = ""

    def extra_params(self) -> dict[str, Any]:
        """Command-line options recorded beside the stage parameters in every output."""
        return {
            "options": {
                "spacing_mm": self.spacing_mm,
                "regions": self.regions,
                "regions_sha256": self.regions_sha256,
            }
        }

    def key(self) -> str:
        """Cache key of these settings (the salt enters only through its fingerprint; the
        models through their digests, so a retrained model is not served old results)."""
        from calcimage.candidates import model_digest
        from calcimage.pixels import pixel_model_digest

        seg = self.config.segment
        return cache_key(
            {
                "config": self.config.to_dict(),
                "candidate_model": model_digest(seg.score_model) if seg.min_score > 0 else "",
                "pixel_model": pixel_model_digest(seg.pixel_model) if seg.pixel_min_prob > 0 else "",
                "extra": self.extra_params(),
                "keep_ids": self.keep_ids,
                "salt": salt_fingerprint(self.salt) if self.salt else "",
                "format": 1,
            }
        )


@dataclass(frozen=True)
class FilmResult:
    """Outcome of :func:`measure_film_job` for one input (small, picklable)."""

    source: str
    ok: bool
    error: str = ""
    internal: bool = False
    sha256: str = ""
    folder: str = ""
    group: str = ""
    film_id: str = ""
    input_name: str = ""
    date: str | None = None
    lesion_count: int | None = None
    total_area_mm2: float | None = None
    total_area_px: int | None = None
    total_burden: float | None = None
    reused: bool = False
    warnings: tuple[str, ...] = ()
    #: Traceback of an internal error (logged by the CLI with --verbose).
    traceback: str = ""


@dataclass(frozen=True)
class PairResult:
    """Outcome of :func:`compare_pair_job` for a baseline / follow-up pair."""

    source: str
    ok: bool
    error: str = ""
    internal: bool = False
    folder: str = ""
    change_pct: float | None = None
    change_area_mm2: float | None = None
    category: str | None = None
    interval_days: int | None = None
    reused: bool = False
    warnings: tuple[str, ...] = ()
    traceback: str = ""


# --------------------------------------------------------------------------- jobs


def measure_file(path: Path, settings: RunSettings) -> Any:
    """load -> segment -> measure with the run's settings."""
    import calcimage
    from calcimage.measure import measure
    from calcimage.segment import segment

    film = calcimage.load(path, spacing_mm=settings.spacing_mm)
    seg = segment(film, settings.config.segment)
    return measure(film, seg, regions=settings.regions, params=settings.config.measure)


#: Version of the saved comparison data (2: the bone mask is saved too; 3: the pixel model's
#: lesions, ``Segmentation.pixel_added``).
_COMPARE_DATA_VERSION = 3


def _compare_data_path(out_dir: Path, sha256: str, settings: RunSettings) -> Path:
    # Beside the film's cache entry, not *.json: the entry stays the single "film done" mark.
    return cache_path(out_dir, "films", sha256, settings.key()).with_suffix(".compare.npz")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()  # numpy scalars
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _settings_text(params: Any) -> str:
    return json.dumps(params, sort_keys=True, default=_json_default)


def save_compare_data(path: Path, m: Any) -> None:
    """Write what a comparison needs of measurement ``m`` besides its film and labels.png.

    One compressed ``.npz`` (no pickles): the lesion table, region totals, parameters and
    segmentation scalars as JSON (floats round-trip exactly) and the collimation, marker and
    bone masks, and the lesions the pixel model added when it ran. :func:`rebuilt_measurement`
    reads it back.
    """
    import numpy as np

    from calcimage.measure import COMPARE_MASKS
    from calcimage.params import params_to_dict

    seg = m.segmentation
    meta = {
        "version": _COMPARE_DATA_VERSION,
        "sha256": m.film.sha256,
        "shape": list(m.labels.shape),
        "lesions": [
            {f.name: getattr(l, f.name) for f in dataclasses.fields(l)} | {"kind": l.kind.value}
            for l in m.lesions
        ],
        "regions": [r.as_dict() for r in m.regions],
        "params": m.params,
        "units": m.units,
        "note": m.note,
        "segment_params": params_to_dict(seg.params),
        "segmentation": {
            "threshold": seg.threshold, "threshold_low": seg.threshold_low, "air_level": seg.air_level,
            "noise_sigma": seg.noise_sigma, "threshold_k": seg.threshold_k,
            "scale_spacing_mm": seg.scale_spacing_mm, "rejected_ridges": seg.rejected_ridges,
        },
    }
    arrays = {
        f"excluded_{name}": np.asarray(seg.excluded[name], dtype=bool)
        for name in COMPARE_MASKS
        if seg.excluded.get(name) is not None
    }
    if seg.pixel_added is not None:
        arrays["pixel_added"] = np.asarray(seg.pixel_added, dtype=bool)
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=np.array(json.dumps(meta, default=_json_default)), **arrays)
    write_bytes(path, buf.getvalue())


def rebuilt_measurement(path: str | os.PathLike[str], film: FilmResult, out: str | os.PathLike[str],
                        settings: RunSettings) -> Any | None:
    """The measurement of a study film, rebuilt without segmenting it again.

    Loads the film again and takes the labels from its ``labels.png`` and the rest from the
    data :func:`save_compare_data` left. The rebuilt segmentation holds only what comparing
    uses (parameters, scalars, labels, the collimation, marker and bone masks, the regions);
    its ``flattened`` is a NaN placeholder and its ``background`` None.

    Returns
    -------
    Measurement or None
        None when the saved data is missing, unreadable or does not belong to this film and
        these settings (the caller then measures the film again).
    """
    import cv2
    import numpy as np

    import calcimage
    from calcimage.measure import COMPARE_MASKS, Lesion, Measurement, RegionTotal
    from calcimage.params import params_to_dict
    from calcimage.segment import LesionKind, Segmentation

    out_dir = Path(out)
    if not film.sha256 or not film.folder:
        return None
    try:
        with np.load(_compare_data_path(out_dir, film.sha256, settings), allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            masks = {name: npz[f"excluded_{name}"] for name in COMPARE_MASKS if f"excluded_{name}" in npz.files}
            pixel_added = npz["pixel_added"] if "pixel_added" in npz.files else None
        labels = cv2.imdecode(np.fromfile(out_dir / film.folder / "labels.png", dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        lesions = tuple(Lesion(**(d | {"kind": LesionKind(d["kind"])})) for d in meta["lesions"])
        regions = tuple(RegionTotal(**d) for d in meta["regions"])
        shape = tuple(meta["shape"])
        same = (
            meta.get("version") == _COMPARE_DATA_VERSION
            and meta.get("sha256") == film.sha256
            and _settings_text(meta["segment_params"]) == _settings_text(params_to_dict(settings.config.segment))
            and labels is not None and labels.shape == shape
            and int(labels.max(initial=0)) == len(lesions)
            and all(mask.shape == shape for mask in masks.values())
            and (pixel_added is None or pixel_added.shape == shape)
        )
    except Exception as exc:  # a cache: anything wrong with it means "measure again"
        logger.info("%s: no usable saved measurement (%s: %s)", film.input_name, type(exc).__name__, exc)
        return None
    if not same:
        logger.info("%s: saved measurement does not match this film or these settings", film.input_name)
        return None
    loaded = calcimage.load(path, spacing_mm=settings.spacing_mm)
    if loaded.sha256 != film.sha256 or loaded.shape != shape:
        logger.info("%s: the file changed since it was measured", film.input_name)
        return None
    # As a lean measurement holds them (labels.png is 16-bit): uint16, half of int32's memory.
    labels = labels.astype(np.uint16)
    try:
        seg = Segmentation(
            labels=labels,
            kinds=tuple(l.kind for l in lesions),
            flattened=np.broadcast_to(np.float32(np.nan), shape),  # not kept; comparing does not use it
            excluded=masks,
            params=settings.config.segment,
            pixel_added=pixel_added,
            **meta["segmentation"],
        )
    except TypeError as exc:  # saved by a calcimage whose Segmentation had other fields
        logger.info("%s: saved measurement does not fit (%s)", film.input_name, exc)
        return None
    return Measurement(
        film=loaded, segmentation=seg, labels=labels, lesions=lesions, regions=regions,
        params=meta["params"], units=meta["units"], note=meta["note"],
        regions_spec=settings.regions, measure_params=settings.config.measure,
    )


def lean_measurement(m: Any) -> Any:
    """:func:`calcimage.measure.lean_measurement` (imported when first used)."""
    from calcimage.measure import lean_measurement as lean

    return lean(m)


def _measurement_for(path: str, film: FilmResult, out: str, settings: RunSettings) -> Any:
    m = rebuilt_measurement(path, film, out, settings)
    if m is None:
        m = lean_measurement(measure_file(Path(path), settings))
    return m


def _folder_of(film: Any, settings: RunSettings) -> tuple[str, str, Identity]:
    ident = film_identity(film)
    group = group_name(
        ident.patient_id, ident.laterality, ident.view, salt=settings.salt, keep_ids=settings.keep_ids
    )
    film_id = f"{ident.date.isoformat() if ident.date else 'undated'}_{film.sha256[:8]}"
    return group, film_id, ident


def _failure(cls: type, source: str, exc: BaseException, caught: list[str], **kw: Any) -> Any:
    internal = not isinstance(exc, CalcimageError)
    detail = ""
    if internal:
        import traceback

        detail = "".join(traceback.format_exception(exc))
        message = f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())}"
    else:
        message = str(exc)
    return cls(source=source, ok=False, error=message, internal=internal, warnings=tuple(caught),
               traceback=detail, **kw)


def _rel(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def cached_film(
    path: str, out: str, settings: RunSettings, *, sha256: str | None, folder: str | None = None
) -> FilmResult | None:
    """The result of an earlier run for this input and settings, if all its files are there."""
    if not sha256:
        return None
    out_dir = Path(out)
    entry = read_cache(cache_path(out_dir, "films", sha256, settings.key()), out_dir)
    if entry is None or (folder is not None and entry.get("folder") != folder):
        return None
    fields = {f.name for f in dataclasses.fields(FilmResult)}
    data = {k: v for k, v in entry.get("result", {}).items() if k in fields}
    data.update(source=str(path), reused=True, warnings=())
    try:
        return FilmResult(**data)
    except TypeError:
        return None


def cached_pair(
    baseline: FilmResult, followup: FilmResult, out: str, settings: RunSettings, *, folder: str
) -> PairResult | None:
    """The comparison of an earlier run for these two inputs and settings, if complete."""
    out_dir = Path(out)
    entry = read_cache(cache_path(out_dir, "pairs", baseline.sha256, followup.sha256, settings.key()), out_dir)
    if entry is None or entry.get("folder") != folder:
        return None
    fields = {f.name for f in dataclasses.fields(PairResult)}
    data = {k: v for k, v in entry.get("result", {}).items() if k in fields}
    data.update(source=f"{baseline.input_name} -> {followup.input_name}", reused=True, warnings=())
    try:
        return PairResult(**data)
    except TypeError:
        return None


def measure_film_job(
    path: str,
    out: str,
    settings: RunSettings,
    *,
    folder: str | None = None,
    input_name: str | None = None,
    sha256: str | None = None,
) -> FilmResult:
    """Measure one film and write its folder (top-level so worker processes can run it).

    Parameters
    ----------
    path
        The input film.
    out
        The results folder.
    settings
        Parameters and run options.
    folder
        Output folder relative to ``out`` (``calcimage measure``); None for the study layout
        ``<group>/<film>`` derived from the film's metadata.
    input_name
        What summary.json records as ``input`` (defaults to ``path``; in the study layout
        ``<group>/<film>`` unless ``keep_ids``).
    sha256
        The input's sha256 if already known: a finished cache entry for it is reused
        without loading the film.
    """
    src, out_dir = Path(path), Path(out)
    caught: list[str] = []
    key = settings.key()
    if sha256:
        cached = cached_film(path, out, settings, sha256=sha256, folder=folder)
        if cached is not None:
            return cached
    try:
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            m = measure_file(src, settings)
            group, film_id, ident = _folder_of(m.film, settings)
            if folder is None:
                rel_folder = f"{group}/{film_id}"
                name = (input_name or src.as_posix()) if settings.keep_ids else rel_folder
            else:
                rel_folder = folder
                name = input_name or str(path)
            from calcimage.report import write_measurement

            summary = write_measurement(out_dir / rel_folder, m, input_name=name, extra_params=settings.extra_params())
            if folder is None:  # study layout: keep what the comparisons need
                save_compare_data(_compare_data_path(out_dir, m.film.sha256, settings), m)
        caught = [str(w.message) for w in records]
    except Exception as exc:  # one film's failure must not stop the batch
        return _failure(FilmResult, str(path), exc, caught)
    result = FilmResult(
        source=str(path),
        ok=True,
        sha256=m.film.sha256,
        folder=rel_folder,
        group=group if folder is None else "",
        film_id=film_id if folder is None else rel_folder,
        input_name=name,
        date=ident.date.isoformat() if ident.date else None,
        lesion_count=summary["lesion_count"],
        total_area_mm2=summary["total_area_mm2"],
        total_area_px=summary["total_area_px"],
        total_burden=summary["total_burden"],
        warnings=tuple(caught),
    )
    entry = {
        "files": [f"{rel_folder}/{f}" for f in MEASURE_FILES],
        "folder": rel_folder,
        "result": {k: v for k, v in dataclasses.asdict(result).items() if k not in ("source", "warnings", "reused", "traceback")},
    }
    write_cache(cache_path(out_dir, "films", m.film.sha256, key), entry)
    return result


def compare_pair_job(
    baseline: FilmResult,
    followup: FilmResult,
    base_path: str,
    follow_path: str,
    out: str,
    settings: RunSettings,
    *,
    folder: str,
    allow_different_patients: bool = False,
) -> PairResult:
    """Compare two measured films of a study and write the pair's folder.

    ``baseline``/``followup`` are the films' :class:`FilmResult` (their sha256 keys the cache,
    their ``input_name`` is recorded). Their measurements are rebuilt from what the film jobs
    saved (:func:`rebuilt_measurement`), or, failing that, measured again (deterministic).
    """
    out_dir = Path(out)
    source = f"{baseline.input_name} -> {followup.input_name}"
    cpath = cache_path(out_dir, "pairs", baseline.sha256, followup.sha256, settings.key())
    cached = cached_pair(baseline, followup, out, settings, folder=folder)
    if cached is not None:
        return cached
    caught: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            data, _ = compare_measured(
                _measurement_for(base_path, baseline, out, settings),
                _measurement_for(follow_path, followup, out, settings),
                out_dir / folder,
                settings,
                baseline_name=baseline.input_name,
                followup_name=followup.input_name,
                allow_different_patients=allow_different_patients,
            )
        caught = [str(w.message) for w in records]
    except Exception as exc:
        return _failure(PairResult, source, exc, caught, folder=folder)
    result = PairResult(
        source=source,
        ok=True,
        folder=folder,
        change_pct=data["change"]["total_area_pct"],
        change_area_mm2=data["change"]["total_area_mm2"],
        category=data["category"],
        interval_days=data["interval_days"],
        warnings=tuple(caught),
    )
    write_cache(
        cpath,
        {
            "files": [f"{folder}/{f}" for f in COMPARE_FILES],
            "folder": folder,
            "result": {k: v for k, v in dataclasses.asdict(result).items() if k not in ("source", "warnings", "reused", "traceback")},
        },
    )
    return result


def compare_measured(
    base: Any,
    follow: Any,
    folder: Path,
    settings: RunSettings,
    *,
    baseline_name: str,
    followup_name: str,
    allow_different_patients: bool = False,
) -> tuple[dict[str, Any], Any]:
    """Compare two measurements and write comparison.json, changes.csv and overlay.png.

    Returns comparison.json's content and the :class:`calcimage.compare.Comparison`, whose
    ``baseline``/``followup`` are the films as compared (a film segmented again with the
    other's bone is that segmentation: the lesion ids of the rows are its ids).
    """
    from calcimage.compare import compare
    from calcimage.report import write_comparison

    params = settings.config.compare
    if allow_different_patients:
        params = dataclasses.replace(params, allow_different_patients=True)
    comparison = compare(base, follow, params)
    data = write_comparison(
        folder, comparison, baseline_name=baseline_name, followup_name=followup_name,
        extra_params=settings.extra_params(),
    )
    return data, comparison


# --------------------------------------------------------------------------- planning


def order_groups(films: Iterable[FilmResult]) -> dict[str, list[FilmResult]]:
    """Successful films by group (groups sorted by name), each ordered baseline first."""
    groups: dict[str, list[FilmResult]] = {}
    for film in films:
        if film.ok:
            groups.setdefault(film.group, []).append(film)
    return {
        g: sorted(items, key=lambda f: (f.date is None, f.date or "", f.film_id, f.source))
        for g, items in sorted(groups.items())
    }


def study_rows(
    groups: dict[str, list[FilmResult]], pairs: dict[tuple[str, str], PairResult]
) -> list[dict[str, Any]]:
    """Rows of study.csv: one per film, baseline first within each group.

    ``pairs`` maps (group, follow-up film id) to its comparison.
    """
    rows = []
    for group, films in groups.items():
        base = films[0]
        base_date = dt.date.fromisoformat(base.date) if base.date else None
        for k, film in enumerate(films):
            date = dt.date.fromisoformat(film.date) if film.date else None
            row: dict[str, Any] = {
                "group": group,
                "film": film.film_id,
                "date": film.date,
                "months_since_baseline": months_between(base_date, date),
                "lesion_count": film.lesion_count,
                "total_area_mm2": film.total_area_mm2,
                "total_area_px": film.total_area_px,
                "total_burden": film.total_burden,
                "change_pct": None,
                "category": "baseline" if k == 0 else None,
            }
            if k == 0:
                row["months_since_baseline"] = 0.0 if base_date else None
            pair = pairs.get((group, film.film_id))
            if k > 0 and pair is not None and pair.ok:
                row["change_pct"] = pair.change_pct
                row["category"] = pair.category
            elif k > 0:
                row["category"] = "failed"
            rows.append(row)
    return rows
