"""The results folder: refusing unsafe output locations, the ownership marker, the resume cache.

A folder calcimage writes into holds ``.calcimage/marker.json`` (written first) saying that
calcimage made it. Each finished film or pair gets a small cache entry under
``.calcimage/films/`` or ``.calcimage/pairs/``, written *after* all its output files, keyed by
the input's sha256 and a hash of everything that shapes the result (parameters, spacing
override, regions file, pseudonymisation). A rerun reuses an entry only when the key matches
and the files it lists are all there, so a run killed at any moment resumes to the same
results an uninterrupted run gives.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from calcimage.errors import OutputError
from calcimage.report.atomic import remove_stale_temporaries, write_text

__all__ = [
    "STATE_DIR",
    "MARKER",
    "check_output_location",
    "prepare_output",
    "cache_key",
    "cache_path",
    "read_cache",
    "write_cache",
]

STATE_DIR = ".calcimage"
MARKER = "marker.json"
_MARKER_VERSION = 1


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output_location(out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]]) -> None:
    """Refuse an output folder that could overwrite an input.

    Raises
    ------
    OutputError
        When ``out`` equals an input folder or lies inside one, or an input (file or folder)
        lies inside ``out``. Symlinks are resolved first.
    """
    out_r = _resolved(Path(out))
    for item in inputs:
        item_r = _resolved(Path(item))
        if item_r.is_dir() and _is_within(out_r, item_r):
            raise OutputError(
                f"--out {out} is inside the input folder {item}; choose an output folder outside "
                "the inputs so they can never be overwritten"
            )
        if _is_within(item_r, out_r):
            raise OutputError(
                f"input {item} is inside the output folder {out}; choose an output folder that "
                "holds no inputs"
            )


def prepare_output(
    out: str | os.PathLike[str],
    inputs: Iterable[str | os.PathLike[str]],
    *,
    force: bool = False,
    salt_fingerprint: str | None = None,
) -> Path:
    """Check ``out`` is safe, create it with its marker, and sweep an interrupted run's temporaries.

    An existing non-empty folder without calcimage's marker is refused unless ``force``; a
    folder with the marker is reused (the run resumes). When ``salt_fingerprint`` is given and
    the marker records another one, the folder is refused: its group names were made with a
    different pseudonymisation salt.

    Raises
    ------
    OutputError
        For any of the refusals above, or when the folder cannot be created.
    """
    out = Path(out)
    check_output_location(out, inputs)
    marker_path = out / STATE_DIR / MARKER
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a folder; choose a folder path")
    marker: dict[str, Any] | None = None
    if marker_path.is_file():
        try:
            marker = json.loads(marker_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            marker = None
    if marker is None and out.is_dir() and any(out.iterdir()) and not force:
        raise OutputError(
            f"--out {out} already exists, is not empty and was not created by calcimage; "
            "choose a new folder or pass --force to write into it"
        )
    if marker is not None and salt_fingerprint is not None:
        recorded = marker.get("salt_fingerprint")
        if recorded is not None and recorded != salt_fingerprint:
            raise OutputError(
                f"--out {out} was written with a different pseudonymisation salt (CALCIMAGE_SALT); "
                "use the same salt or a new output folder"
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"--out {out}: cannot create folder: {exc.strerror or exc}") from None
    remove_stale_temporaries(out)
    if marker is None or (salt_fingerprint is not None and marker.get("salt_fingerprint") is None):
        data = {"created_by": "calcimage", "marker_version": _MARKER_VERSION}
        if salt_fingerprint is not None:
            data["salt_fingerprint"] = salt_fingerprint
        write_text(marker_path, json.dumps(data, indent=2) + "\n")
    return out


def cache_key(settings: Mapping[str, Any]) -> str:
    """Short hash of everything besides the input bytes that shapes a result."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def cache_path(out: Path, kind: str, *parts: str) -> Path:
    """Where the cache entry of a film (``kind="films"``) or pair (``"pairs"``) lives."""
    return Path(out) / STATE_DIR / kind / ("-".join(parts) + ".json")


def read_cache(path: Path, out: Path) -> dict[str, Any] | None:
    """The cache entry at ``path`` if it is readable and every file it lists exists under ``out``."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(entry, dict):
        return None
    files = entry.get("files", [])
    if not isinstance(files, list) or not all((Path(out) / f).is_file() for f in files):
        return None
    return entry


def write_cache(path: Path, entry: Mapping[str, Any]) -> None:
    """Write a cache entry (call it only after every file it lists is in place)."""
    write_text(path, json.dumps(entry, indent=2, sort_keys=True) + "\n")
