"""Seed-range parsing shared by the benchmark scripts."""

from __future__ import annotations


def parse_seeds(text: str) -> list[int]:
    """``"1000-1023"`` or ``"1,2,5-7"`` -> list of ints."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out
