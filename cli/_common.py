"""Shared CLI plumbing: error handling and exit codes."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

import typer

from calcimage.errors import CalcimageError

__all__ = ["EXIT_OK", "EXIT_INTERNAL", "EXIT_BAD_INPUT", "EXIT_PARTIAL", "fail_on_errors"]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3

logger = logging.getLogger("calcimage.cli")


@contextlib.contextmanager
def fail_on_errors() -> Iterator[None]:
    """Turn bad input into one line on stderr and exit 2; anything else exits 1."""
    try:
        yield
    except CalcimageError as exc:
        typer.echo(f"calcimage: error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # an internal failure: say so, keep the traceback for --verbose
        logger.debug("internal error", exc_info=True)
        typer.echo(f"calcimage: internal error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(EXIT_INTERNAL) from None
