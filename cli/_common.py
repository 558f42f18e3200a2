"""Shared CLI plumbing: error handling, exit codes, options, progress, parallel jobs, summaries."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, TypeVar

import typer

from calcimage.errors import CalcimageError

__all__ = [
    "EXIT_OK",
    "EXIT_INTERNAL",
    "EXIT_BAD_INPUT",
    "EXIT_PARTIAL",
    "fail_on_errors",
    "is_quiet",
    "default_workers",
    "stderr_console",
    "stdout_console",
    "run_jobs",
    "exit_code_for",
    "report_failures",
    "load_run_config",
]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3

logger = logging.getLogger("calcimage.cli")
R = TypeVar("R")


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


def is_quiet(ctx: typer.Context | None) -> bool:
    """True when the root ``--quiet`` flag was given."""
    while ctx is not None:
        if isinstance(ctx.obj, dict) and "quiet" in ctx.obj:
            return bool(ctx.obj["quiet"])
        ctx = ctx.parent
    return False


def default_workers() -> int:
    """Number of CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def stdout_console() -> Any:
    from rich.console import Console

    return Console()


def _init_worker(parent_pid: int, opencv_threads: int) -> None:
    """Worker initializer: cap OpenCV's thread pool (N workers × all-core pools would fight for
    the cores; per-pixel results do not depend on it), then tie the worker's life to the CLI."""
    import cv2

    cv2.setNumThreads(opencv_threads)
    _die_with_parent(parent_pid)


def _die_with_parent(parent_pid: int) -> None:
    """On Linux, ask the kernel to kill this worker when the CLI dies, so a ``kill -9`` of
    calcimage stops its workers too instead of leaving them writing."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    try:
        os.kill(parent_pid, 0)  # the CLI died before prctl took effect
    except ProcessLookupError:
        os._exit(1)
    except OSError:
        pass


#: Modules a worker needs, imported once by the fork server instead of once per film.
_PRELOAD = [
    "calcimage.study", "calcimage.io.load", "calcimage.io.dicom", "calcimage.io.image",
    "calcimage.segment", "calcimage.measure", "calcimage.compare", "calcimage.report.overlay",
    "calcimage.report.tables",
]


def _context() -> Any:
    """Start method for workers: a fork server where there is one (each job is a fresh fork of
    one clean process that has already imported calcimage: fast, and every job starts from the
    same state), else spawn."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        from multiprocessing import forkserver

        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
        # Python 3.11's fork server imports the preload with the working directory first on
        # sys.path (it ignores the parent's sys.path), so run from a source checkout it would
        # import ./calcimage instead of the installed package (which has calcimage.cli).
        # PYTHONSAFEPATH keeps the working directory off its sys.path; the server inherits the
        # environment when it starts, so set it just for that.
        saved = os.environ.get("PYTHONSAFEPATH")
        os.environ["PYTHONSAFEPATH"] = "1"
        try:
            forkserver.ensure_running()
        finally:
            if saved is None:
                del os.environ["PYTHONSAFEPATH"]
            else:
                os.environ["PYTHONSAFEPATH"] = saved
        return context
    return multiprocessing.get_context("spawn")


def run_jobs(
    fn: Callable[..., R],
    calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
    *,
    workers: int,
    description: str,
    quiet: bool,
    on_crash: Callable[[int, BaseException], R],
    cached: Callable[[int], R | None] | None = None,
) -> list[R]:
    """Run ``fn(*args, **kwargs)`` for every call, each in a fresh worker process.

    Every call gets its own new process (``max_tasks_per_child=1``; forked from a clean fork
    server, or spawned), whatever ``workers`` is: each film's result cannot depend on what the
    process computed before, whichever ``--workers`` value scheduled it, and a crash inside a
    decoder fails that one film, not the batch. Results come back in the order of ``calls``.
    A rich progress bar runs on stderr when it is a terminal and ``quiet`` is off. ``fn`` must
    be a top-level function. ``on_crash(i, exc)`` makes a result for a call whose worker died;
    ``cached(i)``, when given, returns a finished result from an earlier run (or None) so that
    no process is started for it.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = stderr_console()
    results: list[R | None] = [None] * len(calls)
    if not calls:
        return []
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, disable=quiet or not console.is_terminal, transient=False,
    )
    todo = list(range(len(calls)))
    if cached is not None:
        for i in range(len(calls)):
            results[i] = cached(i)
        todo = [i for i in todo if results[i] is None]
    with progress:
        task = progress.add_task(description, total=len(calls), completed=len(calls) - len(todo))
        if not todo:
            return results  # type: ignore[return-value]
        context = _context()
        n_workers = max(1, min(workers, len(todo)))
        # One worker may use every core; several share them.
        opencv_threads = max(1, (os.cpu_count() or 1) // n_workers)
        with ProcessPoolExecutor(
            max_workers=n_workers, mp_context=context, max_tasks_per_child=1,
            initializer=_init_worker, initargs=(os.getpid(), opencv_threads),
        ) as pool:
            futures = {pool.submit(fn, *calls[i][0], **calls[i][1]): i for i in todo}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except Exception as exc:  # a worker died (killed, out of memory, crashed decoder)
                    logger.debug("worker failed", exc_info=True)
                    results[i] = on_crash(i, exc)
                progress.advance(task)
    return results  # type: ignore[return-value]


def exit_code_for(n_ok: int, failures: Sequence[Any]) -> int:
    """0 all fine; 1 any internal error; 2 nothing succeeded (bad input); 3 partial."""
    if not failures:
        return EXIT_OK
    if any(getattr(f, "internal", False) for f in failures):
        return EXIT_INTERNAL
    return EXIT_BAD_INPUT if n_ok == 0 else EXIT_PARTIAL


def report_failures(out: Path, failures: Sequence[Any], total: int) -> None:
    """Write (or clear) ``out/errors.csv`` and print the failures, one line each, on stderr."""
    from calcimage.report.tables import write_errors_csv

    errors_path = out / "errors.csv"
    if not failures:
        with contextlib.suppress(FileNotFoundError):
            errors_path.unlink()  # a stale list from an earlier run would mislead
        return
    write_errors_csv(errors_path, [(f.source, f.error) for f in failures])
    if total == 1:
        typer.echo(f"calcimage: error: {failures[0].error}", err=True)
        return
    for f in failures:
        typer.echo(f"calcimage: failed: {f.error}", err=True)
    typer.echo(f"calcimage: {len(failures)} of {total} failed; listed in {errors_path}", err=True)


def load_run_config(config: Path | None) -> Any:
    """The stage parameters from ``--config FILE`` (defaults without one)."""
    from calcimage.params import Config, load_config

    return load_config(config) if config is not None else Config()


def log_warnings(results: Sequence[Any]) -> None:
    """Re-emit, through logging, the warnings workers captured (and, at DEBUG level, the
    tracebacks of internal errors)."""
    for r in results:
        for message in getattr(r, "warnings", ()):
            logging.getLogger("calcimage").warning("%s", message)
        if getattr(r, "traceback", ""):
            logger.debug("internal error on %s:\n%s", r.source, r.traceback)


