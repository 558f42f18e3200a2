"""``calcimage inspect FILE``: what the loader sees, without patient name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from calcimage.cli._common import fail_on_errors

__all__ = ["inspect"]


def inspect(
    file: Annotated[Path, typer.Argument(help="A DICOM, PNG, TIFF or JPEG film.")],
    spacing: Annotated[Optional[float], typer.Option(help="Pixel spacing in mm, overriding the file's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show what the loader sees: size, spacing and its source, photometric handling, metadata."""
    import calcimage

    with fail_on_errors():
        film = calcimage.load(file, spacing_mm=spacing)
    m = film.metadata
    info = {
        "file": str(file),
        "sha256": film.sha256,
        "format": m.source_format,
        "rows": film.shape[0],
        "columns": film.shape[1],
        "spacing_mm": list(film.spacing_mm) if film.spacing_mm else None,
        "spacing_source": film.spacing_source.value,
        "photometric_interpretation": m.photometric_interpretation,
        "presentation_lut_shape": m.presentation_lut_shape,
        "inverted": m.inverted,
        "modality_lut": m.modality_lut,
        "value_range": list(m.value_range) if m.value_range else None,
        "pixel_min": float(film.pixels.min()),
        "pixel_max": float(film.pixels.max()),
        "voi_windows": [list(w) for w in m.voi_windows],
        "voi_lut_function": m.voi_lut_function,
        "voi_lut_sequence": m.voi_lut_sequence,
        "bits_stored": m.bits_stored,
        "transfer_syntax": m.transfer_syntax,
        "modality": m.modality,
        "body_part": m.body_part,
        "laterality": m.laterality,
        "view_position": m.view_position,
        "study_date": m.study_date.isoformat() if m.study_date else None,
        "patient_id": m.patient_id,
        "study_instance_uid": m.study_instance_uid,
        "series_instance_uid": m.series_instance_uid,
        "sop_instance_uid": m.sop_instance_uid,
        "notes": list(m.notes),
    }
    if film.spacing_mm is None:
        info["notes"].append("no pixel spacing: measurements will be in pixels; pass --spacing MM")
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=str(file), show_header=False)
    for key, value in info.items():
        table.add_row(key, "" if value is None else str(value))
    Console().print(table)
