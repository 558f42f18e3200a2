"""Keeping patient identity out of outputs: pseudonymous group names and safe path parts.

Group folders of ``calcimage study`` are named from a salted hash of the patient id
(``p-<12 hex>``) unless the user asks for ``--keep-ids``. The salt is a secret kept *outside*
the outputs, so that someone holding only a results folder cannot re-derive patient ids by
hashing candidate ids (ids are short and guessable). It is, in this order:

1. the ``CALCIMAGE_SALT`` environment variable, when set (sites share one salt this way);
2. else a random salt created once per user in ``$XDG_CONFIG_HOME/calcimage/salt``
   (``~/.config/calcimage/salt``), readable by that user only.

The same user, inputs and parameters therefore give the same group names run after run; a
results folder records only a fingerprint of the salt (see :func:`salt_fingerprint`) so a rerun
with another salt is detected.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import unicodedata
from pathlib import Path

from calcimage.errors import OutputError

__all__ = [
    "SALT_ENV",
    "load_salt",
    "salt_fingerprint",
    "pseudonym",
    "sanitize_component",
    "group_name",
]

SALT_ENV = "CALCIMAGE_SALT"
_MAX_COMPONENT = 64


def _salt_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "calcimage" / "salt"


def load_salt() -> str:
    """The salt used to pseudonymise patient ids (see the module docstring for where it lives).

    Raises
    ------
    OutputError
        When the per-user salt file cannot be created or read.
    """
    env = os.environ.get(SALT_ENV)
    if env:
        return env
    path = _salt_file()
    try:
        if path.is_file():
            value = path.read_text(encoding="utf-8").strip()
            if value:
                return value
        path.parent.mkdir(parents=True, exist_ok=True)
        value = secrets.token_hex(16)
        # O_EXCL: two processes creating it at once agree on whoever wrote first.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text(encoding="utf-8").strip()
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(value + "\n")
        return value
    except OSError as exc:
        raise OutputError(
            f"{path}: cannot create the pseudonymisation salt: {exc.strerror or exc}; "
            f"set {SALT_ENV} to a secret string instead"
        ) from None


def salt_fingerprint(salt: str) -> str:
    """A short one-way fingerprint of the salt, safe to store beside the outputs."""
    return hashlib.sha256(b"calcimage-salt-fingerprint:" + salt.encode("utf-8")).hexdigest()[:12]


def pseudonym(patient_id: str, salt: str) -> str:
    """``p-`` + 12 hex digits of HMAC-SHA256(salt, patient id): stable, not reversible without the salt."""
    digest = hmac.new(salt.encode("utf-8"), patient_id.strip().encode("utf-8"), hashlib.sha256)
    return "p-" + digest.hexdigest()[:12]


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize_component(text: str, *, fallback: str = "x") -> str:
    """Make DICOM- or file-derived text safe as ONE path component.

    Path separators, control characters and anything outside ``[A-Za-z0-9._-]`` become ``_``;
    leading dots are dropped (no ``..``, no hidden files), length is capped at 64 characters.
    Returns ``fallback`` when nothing is left.

    Examples
    --------
    >>> sanitize_component("../../etc")
    'etc'
    >>> sanitize_component("Hand L/PA")
    'Hand_L_PA'
    """
    text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    text = _UNSAFE.sub("_", text)
    text = re.sub(r"\.{2,}", "_", text)
    text = text.strip("._-")
    text = re.sub(r"_+", "_", text)[:_MAX_COMPONENT].strip("._-")
    return text or fallback


def group_name(
    patient_id: str | None,
    laterality: str | None,
    view: str | None,
    *,
    salt: str,
    keep_ids: bool = False,
) -> str:
    """Folder name of a study group: ``<patient>_<laterality>_<view>``.

    ``<patient>`` is :func:`pseudonym` of the id (or the sanitised id itself with
    ``keep_ids``); ``unknown`` when the film carries no patient id. Missing laterality or view
    read ``NA``.
    """
    if patient_id is None or not str(patient_id).strip():
        patient = "unknown"
    elif keep_ids:
        patient = sanitize_component(str(patient_id), fallback="id")
    else:
        patient = pseudonym(str(patient_id), salt)
    lat = sanitize_component(laterality, fallback="NA") if laterality else "NA"
    vw = sanitize_component(view, fallback="NA") if view else "NA"
    return f"{patient}_{lat}_{vw}"
