"""The ``calcimage`` typer application: one file per command, registered here."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from calcimage.cli.compare_cmd import compare
from calcimage.cli.inspect_cmd import inspect
from calcimage.cli.measure_cmd import measure
from calcimage.cli.phantom_cmd import phantom
from calcimage.cli.study_cmd import study

app = typer.Typer(
    name="calcimage",
    help="Measure calcinosis on plain radiographs and its change over time.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        import calcimage

        typer.echo(f"calcimage {calcimage.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details to stderr.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Measure calcinosis on plain radiographs and its change over time."""
    ctx.obj = {"quiet": quiet, "verbose": verbose}
    # Only the CLI configures logging; the library just logs.
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(level=level, format="calcimage: %(levelname)s: %(message)s")
    logging.captureWarnings(True)
    # pydicom logs every odd element value at WARNING; those are details, not the user's problem.
    logging.getLogger("pydicom").setLevel(logging.DEBUG if verbose else logging.ERROR)


app.command("inspect")(inspect)
app.command("measure")(measure)
app.command("compare")(compare)
app.command("study")(study)
app.command("phantom")(phantom)


def main() -> None:
    """Console-script entry point."""
    app()
