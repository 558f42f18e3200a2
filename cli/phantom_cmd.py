"""``calcimage phantom --out DIR``: synthetic films with exact ground truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from calcimage.cli._common import fail_on_errors

__all__ = ["phantom"]


def _months(text: str) -> tuple[int, ...]:
    from calcimage.errors import ParameterError

    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or any(v <= 0 for v in values) or list(values) != sorted(set(values)):
        raise ParameterError(
            f"--months {text!r} is invalid: give increasing whole months after the baseline, e.g. 3,9"
        )
    return values


def phantom(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write films and truth files into (created).")],
    seed: Annotated[int, typer.Option(min=0, help="Seed; the same seed gives byte-identical files.")] = 0,
    pairs: Annotated[int, typer.Option(min=1, max=1000, help="Synthetic patients, each a baseline and follow-ups.")] = 1,
    months: Annotated[str, typer.Option(help="Follow-up times in months after the baseline, e.g. 3,9.")] = "3",
    film_format: Annotated[str, typer.Option("--format", help="Film format: dicom or png (+ JSON sidecar).")] = "dicom",
    rows: Annotated[int, typer.Option(min=64, max=10000, help="Film rows.")] = 1500,
    cols: Annotated[int, typer.Option(min=64, max=10000, help="Film columns.")] = 1200,
    spacing: Annotated[float, typer.Option(help="Pixel spacing in mm.")] = 0.15,
    min_cnr: Annotated[
        float, typer.Option("--min-cnr", help="Visibility floor: lesion contrast-to-noise ratio (Rose: 5; 0 = off, invisible lesions allowed).")
    ] = 5.0,
    samples: Annotated[
        bool, typer.Option("--samples", help="Write the shipped sample set (sample_images/) instead; other options ignored.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the list of films as JSON.")] = False,
) -> None:
    """Write synthetic limb radiographs with ground truth (NAME.truth.json, NAME.truth.pgm.gz).

    Each patient gets a baseline film and one follow-up per --months value, of the same limb
    repositioned (rotation, shift, magnification), at another exposure, with lesions grown,
    shrunk, resolved or new. The truth JSON lists every lesion's kind, area and centroid, the
    true transform to the baseline and the true change of total area.
    """
    from calcimage.errors import OutputError, ParameterError
    from calcimage.phantom import FilmFormat, PhantomParams, write_pairs, write_sample_set

    with fail_on_errors():
        try:
            fmt = FilmFormat(film_format.lower())
        except ValueError:
            raise ParameterError(f"--format {film_format!r} is invalid: use dicom or png") from None
        follow = _months(months)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{out}: cannot create the output folder: {exc.strerror or exc}") from None
        if samples:
            written = write_sample_set(out)
        else:
            params = PhantomParams(rows=rows, cols=cols, spacing_mm=spacing, min_lesion_cnr=min_cnr)
            written = write_pairs(out, seed=seed, pairs=pairs, months=follow, params=params, film_format=fmt)
    rows_out = []
    for path in written:
        if path.name.endswith(".truth.json"):
            info = json.loads(path.read_text(encoding="utf-8"))
            rows_out.append(
                {
                    "film": str(out / info["film"]),
                    "truth": str(path),
                    "patient_id": info["patient_id"],
                    "study_date": info["study_date"],
                    "lesion_count": info["lesion_count"],
                    "total_area_mm2": info["total_area_mm2"],
                    "true_change_pct": info["true_change_pct"],
                }
            )
    if as_json:
        typer.echo(json.dumps(rows_out, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows_out)} phantom films in {out}")
    table.add_column("film", overflow="fold")
    for column in ("patient", "date", "lesions", "area mm²", "true change %"):
        table.add_column(column, justify="right" if column != "patient" else "left")
    for r in rows_out:
        table.add_row(
            Path(r["film"]).name, r["patient_id"], r["study_date"], str(r["lesion_count"]),
            f"{r['total_area_mm2']:.1f}", f"{r['true_change_pct']:+.1f}",
        )
    Console().print(table)
