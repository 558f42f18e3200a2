"""Exception hierarchy.

Every error calcimage raises on purpose derives from :class:`CalcimageError`; each
subclass also derives from the matching built-in so callers can catch either.
Messages are one line: what was wrong, the value received and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "CalcimageError",
    "FilmReadError",
    "ParameterError",
    "RegistrationError",
    "IncompatibleFilmsError",
    "OutputError",
]


class CalcimageError(Exception):
    """Base class of every error raised by calcimage."""

    def __init__(self, message: str) -> None:
        # Keep messages to one line so the CLI can print them as they are.
        super().__init__(" ".join(str(message).split()))


class FilmReadError(CalcimageError, OSError):
    """A film could not be read: missing, unreadable, corrupt or unsupported."""


class ParameterError(CalcimageError, ValueError):
    """A parameter or configuration value is invalid."""


class RegistrationError(CalcimageError, RuntimeError):
    """Two films could not be aligned (different body part or view, or too little overlap)."""


class IncompatibleFilmsError(CalcimageError, ValueError):
    """Two films must not be compared (different patient, laterality, view or body part)."""


class OutputError(CalcimageError, OSError):
    """An output could not be written, or writing it would overwrite an input."""


class CalcimageWarning(UserWarning):
    """A recoverable oddity in the input (e.g. a colour image converted to grey)."""


__all__.append("CalcimageWarning")
