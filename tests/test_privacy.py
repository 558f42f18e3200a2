"""calcimage.privacy: pseudonyms, the salt, and path-safe text."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from calcimage.privacy import SALT_ENV, group_name, load_salt, pseudonym, salt_fingerprint, sanitize_component


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("../../etc", "etc"),
        ("..", "x"),
        ("", "x"),
        ("/", "x"),
        ("a/b\\c", "a_b_c"),
        ("P 01\x00\n\t", "P_01"),
        ("Müller^Ågot", "Muller_Agot"),
        (".hidden", "hidden"),
        ("a..b", "a_b"),
        ("L", "L"),
        ("x" * 300, "x" * 64),
    ],
)
def test_sanitize_component(text: str, expected: str) -> None:
    assert sanitize_component(text) == expected


@pytest.mark.parametrize("text", ["../../etc", "..\\..\\windows", "a/../../b", "\x1b[31m", "con/..", "~root"])
def test_sanitised_text_is_one_harmless_path_part(text: str, tmp_path: Path) -> None:
    part = sanitize_component(text)
    assert "/" not in part and "\\" not in part and ".." not in part and not part.startswith(".")
    assert all(c.isalnum() or c in "._-" for c in part)
    assert (tmp_path / part).resolve().parent == tmp_path.resolve()


def test_pseudonym_is_stable_salted_and_opaque() -> None:
    a = pseudonym("PAT123", "salt-1")
    assert a == pseudonym("PAT123", "salt-1") == pseudonym(" PAT123 ", "salt-1")
    assert a != pseudonym("PAT123", "salt-2") and a != pseudonym("PAT124", "salt-1")
    assert a.startswith("p-") and len(a) == 14 and "PAT" not in a


def test_group_name() -> None:
    assert group_name("PAT123", "L", "PA", salt="s") == pseudonym("PAT123", "s") + "_L_PA"
    assert group_name("PAT123", "L", "PA", salt="s", keep_ids=True) == "PAT123_L_PA"
    assert group_name("../../etc", "L", "PA", salt="s", keep_ids=True) == "etc_L_PA"
    assert group_name(None, None, "", salt="s") == "unknown_NA_NA"
    assert group_name("X", "R/..", "A P", salt="s", keep_ids=True) == "X_R_A_P"


def test_salt_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SALT_ENV, "site-secret")
    assert load_salt() == "site-secret"


def test_salt_file_is_created_once_and_private(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(SALT_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    first = load_salt()
    path = tmp_path / "calcimage" / "salt"
    assert path.read_text().strip() == first and len(first) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_salt() == first


def test_fingerprint_does_not_reveal_the_salt() -> None:
    fp = salt_fingerprint("site-secret")
    assert fp == salt_fingerprint("site-secret") != salt_fingerprint("other")
    assert "secret" not in fp and len(fp) == 12
