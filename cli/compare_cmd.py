"""``calcimage compare BASELINE FOLLOWUP --out DIR``: change between two films of one patient."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Annotated

import typer

from calcimage.cli._common import fail_on_errors, is_quiet, stdout_console
from calcimage.cli.measure_cmd import (
    ConfigOption,
    DicomOutOption,
    ForceOption,
    OutOption,
    RegionsOption,
    SpacingOption,
    settings_from_options,
)

__all__ = ["compare"]


def compare(
    ctx: typer.Context,
    baseline: Annotated[Path, typer.Argument(help="The baseline film.")],
    followup: Annotated[Path, typer.Argument(help="The follow-up film.")],
    out: OutOption,
    spacing: SpacingOption = None,
    regions: RegionsOption = None,
    config: ConfigOption = None,
    force: ForceOption = False,
    allow_different_patients: Annotated[
        bool, typer.Option("--allow-different-patients", help="Compare films whose patient ids differ.")
    ] = False,
    dicom_out: DicomOutOption = False,
) -> None:
    """Register FOLLOWUP to BASELINE, match lesions and report the change.

    Writes DIR/comparison.json, DIR/changes.csv and DIR/overlay.png.
    """
    from calcimage.report.outdir import prepare_output
    from calcimage.study import compare_measured, lean_measurement, measure_file

    quiet = is_quiet(ctx)
    with fail_on_errors():
        settings = settings_from_options(config, spacing, regions)
        out_dir = prepare_output(out, [baseline, followup], force=force)
        console = stdout_console()
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            with console.status("measuring and comparing…", spinner="dots") if (console.is_terminal and not quiet) else _null():
                # Lean: the baseline is held while the follow-up is segmented.
                base = lean_measurement(measure_file(baseline, settings))
                follow = lean_measurement(measure_file(followup, settings))
                data, comparison = compare_measured(
                    base, follow, out_dir, settings, baseline_name=str(baseline), followup_name=str(followup),
                    allow_different_patients=allow_different_patients,
                )
            if dicom_out:
                from calcimage.report.dicom import write_dicom_for_pair

                # The films as compared: the rows' lesion ids are theirs (a film may have been
                # segmented again with the other's bone).
                _written, messages = write_dicom_for_pair(
                    comparison.baseline, comparison.followup, comparison.lesions, out_dir)
                for message in messages:
                    logging.getLogger("calcimage").warning("%s", message)
        for w in records:
            logging.getLogger("calcimage").warning("%s", w.message)
    if not quiet:
        _print_summary(data, out_dir)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _fmt(value: object, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.2f}{unit}"
    return f"{value}{unit}"


def _print_summary(data: dict, out_dir: Path) -> None:
    from rich.markup import escape
    from rich.table import Table

    change = data["change"]
    table = Table(title=escape(f"calcimage compare → {out_dir}"))
    for col in ("", "lesions", "area mm²", "burden"):
        table.add_column(col, justify="left" if col == "" else "right")
    for name in ("baseline", "followup"):
        s = data[name]
        table.add_row(name, str(s["lesion_count"]), _fmt(s["total_area_mm2"]), _fmt(s["total_burden"]))
    table.add_row("change", _fmt(change.get("lesion_count")), _fmt(change.get("total_area_mm2")),
                  _fmt(change.get("total_burden_pct"), " %"))
    console = stdout_console()
    console.print(table)
    statuses: dict[str, int] = {}
    for lesion in data["lesions"]:
        statuses[lesion["status"]] = statuses.get(lesion["status"], 0) + 1
    detail = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "no lesions"
    console.print(
        f"category: {data['category']} (total area {_fmt(change.get('total_area_pct'), ' %')}); lesions: {detail}",
        highlight=False,
    )
