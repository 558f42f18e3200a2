"""Crash-safe file writing: every output goes to a temporary name, then is renamed into place.

A reader (or a rerun after ``kill -9``) therefore sees either the previous complete file or
the new complete file, never a half-written one. Temporary files are hidden
(``.NAME.<random>.calcimage-tmp``) and swept by :func:`remove_stale_temporaries`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from calcimage.errors import OutputError

__all__ = ["TMP_SUFFIX", "atomic_path", "write_bytes", "write_text", "remove_stale_temporaries"]

#: Every temporary file calcimage writes ends with this suffix.
TMP_SUFFIX = ".calcimage-tmp"


def _fsync_dir(folder: Path) -> None:
    # Make the rename itself durable; not every platform lets a folder be opened.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary keeps ``path``'s suffix as its second-to-last suffix so writers that look
    at the extension still work. On error the temporary is removed and ``path`` is untouched.

    Raises
    ------
    OutputError
        When the folder cannot be created or the rename fails.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path.parent}: cannot create output folder: {exc.strerror or exc}") from None
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{path.suffix}{TMP_SUFFIX}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary name, fsync, rename)."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"{path}: cannot write output: {exc.strerror or exc}") from None


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` with ``\\n`` line ends to ``path`` atomically.

    Text that cannot be UTF-8 (file names that are not valid UTF-8 reach Python as lone
    surrogates) is written as backslash escapes (``\\udcff``) rather than failing.
    """
    write_bytes(path, text.encode("utf-8", errors="backslashreplace"))


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> int:
    """Delete temporaries left by an interrupted run under ``folder``; return how many."""
    removed = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if name.endswith(TMP_SUFFIX):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(root, name))
                    removed += 1
    return removed
