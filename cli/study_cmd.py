"""``calcimage study FOLDER --out DIR``: every patient's films measured, compared, reported."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from calcimage.cli._common import (
    EXIT_OK,
    default_workers,
    exit_code_for,
    fail_on_errors,
    is_quiet,
    log_warnings,
    report_failures,
    run_jobs,
    stdout_console,
)
from calcimage.cli.measure_cmd import (
    ConfigOption,
    DicomOutOption,
    ForceOption,
    OutOption,
    RegionsOption,
    SpacingOption,
    WorkersOption,
    settings_from_options,
    write_dicom_objects,
)

__all__ = ["study"]

logger = logging.getLogger("calcimage.cli")


def study(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="Folder searched recursively for DICOM and image films.")],
    out: OutOption,
    workers: WorkersOption = None,
    config: ConfigOption = None,
    regions: RegionsOption = None,
    spacing: SpacingOption = None,
    force: ForceOption = False,
    keep_ids: Annotated[
        bool, typer.Option("--keep-ids", help="Name group folders by patient id instead of a salted hash.")
    ] = False,
    dicom_out: DicomOutOption = False,
) -> None:
    """Measure a folder of films and compare every follow-up with its group's baseline.

    Films are grouped by patient, laterality and view and ordered by date.

    Writes per-film and per-pair folders under DIR/<group>/, DIR/study.csv and DIR/report.html.
    A rerun into the same DIR reuses finished films and pairs.
    """
    from calcimage.errors import FilmReadError
    from calcimage.privacy import load_salt, salt_fingerprint
    from calcimage.report.html import write_report
    from calcimage.report.outdir import prepare_output
    from calcimage.report.tables import write_study_csv
    from calcimage.study import (
        FilmResult,
        cached_film,
        cached_pair,
        PairResult,
        compare_pair_job,
        discover_films,
        file_sha256,
        measure_film_job,
        order_groups,
        study_rows,
    )

    quiet = is_quiet(ctx)
    with fail_on_errors():
        if not folder.is_dir():
            raise FilmReadError(f"{folder}: not a folder; give the folder holding the study's films")
        salt = "" if keep_ids else load_salt()
        settings = settings_from_options(config, spacing, regions, keep_ids=keep_ids, salt=salt)
        out_dir = prepare_output(
            out, [folder], force=force, salt_fingerprint=None if keep_ids else salt_fingerprint(salt)
        )
        files = discover_films(folder)
        if not files:
            raise FilmReadError(f"{folder}: no films found (DICOM, PNG, TIFF or JPEG)")
    n_workers = workers or default_workers()

    # Identical files (same bytes) are one film.
    calls, seen = [], {}
    for f in files:
        digest = file_sha256(f)
        if digest is not None and digest in seen:
            logger.warning("%s: same content as %s; measured once", f, seen[digest])
            continue
        if digest is not None:
            seen[digest] = f
        rel = f.relative_to(folder).as_posix()
        calls.append(((str(f), str(out_dir), settings), {"folder": None, "input_name": rel, "sha256": digest}))

    def film_crash(i: int, exc: BaseException) -> FilmResult:
        return FilmResult(source=calls[i][0][0], ok=False, error=f"internal error: worker failed: {exc}", internal=True)

    films: list[FilmResult] = run_jobs(
        measure_film_job, calls, workers=n_workers, description="measuring", quiet=quiet, on_crash=film_crash,
        cached=lambda i: cached_film(calls[i][0][0], str(out_dir), settings, sha256=calls[i][1]["sha256"]),
    )
    groups = order_groups(films)
    pair_calls, pair_keys = [], []
    for group, members in groups.items():
        base = members[0]
        for follow in members[1:]:
            pair_folder = f"{group}/compare_{follow.film_id}"
            pair_calls.append(
                ((base, follow, base.source, follow.source, str(out_dir), settings), {"folder": pair_folder})
            )
            pair_keys.append((group, follow.film_id))

    def pair_crash(i: int, exc: BaseException) -> PairResult:
        return PairResult(source=pair_calls[i][1]["folder"], ok=False, error=f"internal error: worker failed: {exc}", internal=True)

    pair_results: list[PairResult] = run_jobs(
        compare_pair_job, pair_calls, workers=n_workers, description="comparing", quiet=quiet, on_crash=pair_crash,
        cached=lambda i: cached_pair(
            pair_calls[i][0][0], pair_calls[i][0][1], str(out_dir), settings, folder=pair_calls[i][1]["folder"]
        ),
    )
    pairs = dict(zip(pair_keys, pair_results))
    log_warnings(films + pair_results)
    rows = study_rows(groups, pairs)
    failures = [r for r in films if not r.ok] + [p for p in pair_results if not p.ok]
    with fail_on_errors():
        if dicom_out:
            # Every planned pair, failed ones too: a follow-up whose comparison failed keeps its
            # time point (T1, T2 ...) and gets new tracking ids instead of posing as a baseline.
            planned_pairs = [
                (groups[g][0].folder, next(f.folder for f in groups[g] if f.film_id == fid), kw["folder"])
                for (g, fid), (_, kw) in zip(pair_keys, pair_calls)
            ]
            write_dicom_objects(
                out_dir, [(f.source, f.folder) for members in groups.values() for f in members], planned_pairs
            )
        write_study_csv(out_dir / "study.csv", rows)
        write_report(
            out_dir / "report.html", out_dir, groups, pairs, rows, failures=failures,
            progression_pct=getattr(settings.config.compare, "progression_pct", 25.0),
            regression_pct=getattr(settings.config.compare, "regression_pct", -25.0),
        )
        report_failures(out_dir, failures, len(films) + len(pair_results))
    if not quiet:
        _print_summary(rows, films, pair_results, out_dir)
    code = exit_code_for(sum(r.ok for r in films), failures)
    if code != EXIT_OK:
        raise typer.Exit(code)


def _print_summary(rows, films, pairs, out_dir: Path) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"calcimage study → {out_dir}"))
    for col in ("group", "date", "months", "lesions", "area mm²", "change", "category"):
        table.add_column(
            col, justify="right" if col in ("months", "lesions", "area mm²", "change") else "left", overflow="fold"
        )
    for row in rows:
        table.add_row(
            row["group"], row["date"] or "—",
            "—" if row["months_since_baseline"] is None else f"{row['months_since_baseline']:.1f}",
            str(row["lesion_count"]),
            "—" if row["total_area_mm2"] is None else f"{row['total_area_mm2']:.2f}",
            "" if row["change_pct"] is None else f"{row['change_pct']:+.1f} %",
            row["category"] or "",
        )
    console = stdout_console()
    console.print(table)
    n_reused = sum(f.reused for f in films if f.ok) + sum(p.reused for p in pairs if p.ok)
    n_failed = sum(not f.ok for f in films) + sum(not p.ok for p in pairs)
    console.print(
        f"{sum(f.ok for f in films)} films measured, {sum(p.ok for p in pairs)} comparisons"
        + (f", {n_reused} reused from an earlier run" if n_reused else "")
        + (f", [red]{n_failed} failed[/red] (see errors.csv)" if n_failed else ""),
        highlight=False,
    )
