"""``calcimage measure FILE_OR_FOLDER... --out DIR``: segment and measure each film."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from calcimage.cli._common import (
    EXIT_OK,
    default_workers,
    exit_code_for,
    fail_on_errors,
    is_quiet,
    load_run_config,
    log_warnings,
    report_failures,
    run_jobs,
    stdout_console,
)

__all__ = ["measure", "settings_from_options"]

OutOption = Annotated[Path, typer.Option("--out", "-o", help="Results folder (created; must not hold the inputs).")]
SpacingOption = Annotated[
    Optional[float], typer.Option("--spacing", help="Pixel spacing in mm, overriding the files' own.")
]
RegionsOption = Annotated[
    Optional[str],
    typer.Option("--regions", help="Regions: a polygon JSON, a label-mask image, or 'grid RxC'."),
]
ConfigOption = Annotated[
    Optional[Path], typer.Option("--config", help="TOML parameter file with the sections segment, measure and compare.")
]
WorkersOption = Annotated[
    Optional[int], typer.Option("--workers", "-j", min=1, help="Films processed in parallel (default: CPU cores).")
]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Write into an existing non-empty folder calcimage did not create.")
]
DicomOutOption = Annotated[
    bool,
    typer.Option(
        "--dicom-out",
        help="Also write DICOM SEG + SR for DICOM films (for PACS; they carry the patient's identity).",
    ),
]


def write_dicom_objects(out_dir: Path, films, pairs=()) -> None:
    """DICOM SEG + SR for the finished films of a results folder (``--dicom-out``); problems
    are logged as warnings, never fatal (the measurements are already written)."""
    from calcimage.report.dicom import write_dicom_for_outputs

    _written, messages = write_dicom_for_outputs(out_dir, films, pairs)
    for message in messages:
        logging.getLogger("calcimage").warning("%s", message)


def settings_from_options(
    config: Path | None, spacing: float | None, regions: str | None, *, keep_ids: bool = False, salt: str = ""
):
    """Validate the shared options and bundle them as :class:`calcimage.study.RunSettings`."""
    from calcimage.errors import ParameterError
    from calcimage.params import require_positive
    from calcimage.study import RunSettings, file_sha256

    cfg = load_run_config(config)
    if spacing is not None:
        try:
            require_positive("--spacing", spacing)
        except ParameterError as exc:
            raise ParameterError(f"{exc}; give the pixel spacing in mm, e.g. --spacing 0.1") from None
    regions_sha = None
    if regions is not None and Path(regions).is_file():
        regions_sha = file_sha256(regions)
    return RunSettings(
        config=cfg, spacing_mm=spacing, regions=regions, regions_sha256=regions_sha, keep_ids=keep_ids, salt=salt
    )


def _crash(source: str):
    from calcimage.study import FilmResult

    return lambda _i, exc: FilmResult(source=source, ok=False, error=f"internal error: worker failed: {exc}", internal=True)


def measure(
    ctx: typer.Context,
    inputs: Annotated[list[Path], typer.Argument(help="Films, or folders searched recursively for films.")],
    out: OutOption,
    spacing: SpacingOption = None,
    regions: RegionsOption = None,
    config: ConfigOption = None,
    workers: WorkersOption = None,
    force: ForceOption = False,
    dicom_out: DicomOutOption = False,
) -> None:
    """Segment and measure calcinosis on each film.

    Writes DIR/<film>/labels.png, lesions.csv, summary.json and overlay.png per film.
    """
    from calcimage.errors import FilmReadError
    from calcimage.report.outdir import prepare_output
    from calcimage.study import FilmResult, cached_film, discover_films, file_sha256, measure_film_job, unique_folder_names

    quiet = is_quiet(ctx)
    with fail_on_errors():
        settings = settings_from_options(config, spacing, regions)
        files: list[Path] = []
        for item in inputs:
            if item.is_dir():
                found = discover_films(item)
                if not found:
                    raise FilmReadError(f"{item}: no films found (DICOM, PNG, TIFF or JPEG)")
                files.extend(found)
            elif not item.exists() and not item.is_symlink():
                raise FilmReadError(f"{item}: no such file or folder")
            else:
                files.append(item)
        files = list(dict.fromkeys(files))  # the same file given twice is measured once
        out_dir = prepare_output(out, inputs, force=force)
    folders = unique_folder_names(files)
    calls = [
        ((str(f), str(out_dir), settings), {"folder": name, "input_name": str(f), "sha256": file_sha256(f)})
        for f, name in zip(files, folders)
    ]
    n_workers = workers or default_workers()
    results: list[FilmResult] = run_jobs(
        measure_film_job, calls, workers=n_workers, description="measuring", quiet=quiet,
        on_crash=lambda i, exc: _crash(str(files[i]))(i, exc),
        cached=lambda i: cached_film(
            calls[i][0][0], str(out_dir), settings, sha256=calls[i][1]["sha256"], folder=calls[i][1]["folder"]
        ),
    )
    log_warnings(results)
    failures = [r for r in results if not r.ok]
    with fail_on_errors():
        if dicom_out:
            write_dicom_objects(out_dir, [(r.source, r.folder) for r in results if r.ok])
        report_failures(out_dir, failures, len(results))
    if not quiet:
        _print_summary(results, out_dir)
    code = exit_code_for(len(results) - len(failures), failures)
    if code != EXIT_OK:
        raise typer.Exit(code)


def _print_summary(results, out_dir: Path) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"calcimage measure → {out_dir}"))
    for col in ("film", "lesions", "area mm²", "area px", "status"):
        table.add_column(
            col, justify="right" if col in ("lesions", "area mm²", "area px") else "left", overflow="fold"
        )
    for r in results:
        if r.ok:
            area = "—" if r.total_area_mm2 is None else f"{r.total_area_mm2:.2f}"
            table.add_row(r.folder, str(r.lesion_count), area, str(r.total_area_px), "reused" if r.reused else "ok")
        else:
            table.add_row(escape(r.source), "", "", "", "[red]failed[/red]")
    stdout_console().print(table)
