"""calcimage.report.html: the trend plot and a self-contained report.html."""

from __future__ import annotations

import re
from pathlib import Path

from _report_builders import make_comparison, make_measurement
from calcimage.report import write_comparison, write_measurement
from calcimage.report.html import render_report, trend_svg
from calcimage.study import FilmResult, PairResult

ROWS = [
    {"group": "g", "film": "t0", "months_since_baseline": 0.0, "total_area_mm2": 100.0, "total_area_px": 1000,
     "lesion_count": 4, "change_pct": None, "category": "baseline"},
    {"group": "g", "film": "t1", "months_since_baseline": 3.0, "total_area_mm2": 130.0, "total_area_px": 1300,
     "lesion_count": 5, "change_pct": 30.0, "category": "progression"},
]


def test_trend_svg_draws_band_lines_and_points() -> None:
    svg = trend_svg(ROWS, width=640, height=300)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 2
    assert "stable band -25 % .. +25 %" in svg and "months since baseline" in svg and "mm²" in svg
    # the band spans 75..125 mm² on an axis up to 1.1 × 130: check its height in pixels
    band = re.search(r'<rect x="64" y="([\d.]+)" width="520" height="([\d.]+)" fill="#4a90d9"', svg)
    ph = 300 - 20 - 44
    assert band is not None
    assert abs(float(band.group(2)) - ph * 50 / 143) < 0.2


def test_trend_svg_falls_back_to_pixels_and_order() -> None:
    rows = [dict(r, total_area_mm2=None, months_since_baseline=None) for r in ROWS]
    svg = trend_svg(rows)
    assert "total area (px)" in svg and "some films undated" in svg


def write_fixture_report(folder: Path) -> str:
    """report.html over hand-built results: two film overlays and one comparison overlay."""
    write_measurement(folder / "g" / "t0", make_measurement(0.1, shape=(120, 160)), input_name="g/t0")
    write_measurement(folder / "g" / "t1", make_measurement(0.1, shape=(120, 160)), input_name="g/t1")
    write_comparison(folder / "g" / "compare_t1", make_comparison(), baseline_name="g/t0", followup_name="g/t1")
    films = [FilmResult(source="a", ok=True, folder="g/t0", group="g", film_id="t0", lesion_count=4),
             FilmResult(source="b", ok=True, folder="g/t1", group="g", film_id="t1", lesion_count=5)]
    pairs = {("g", "t1"): PairResult(source="", ok=True, folder="g/compare_t1", change_pct=30.0,
                                     category="progression")}
    failures = [FilmResult(source="x", ok=False, error="x.dcm: file is empty (0 bytes) <script>")]
    text = render_report(folder, {"g": films}, pairs, ROWS, failures=failures, generated="2026-01-01T00:00:00Z")
    (folder / "report.html").write_text(text, encoding="utf-8")
    return text


def test_report_is_self_contained_and_escaped(tmp_path: Path) -> None:
    text = write_fixture_report(tmp_path)
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) == 3 and all(s.startswith("data:image/jpeg;base64,") for s in sources)
    outside = re.sub(r'"data:[^"]*"', '""', text)
    assert not re.search(r"https?:|//[a-z]|url\(|<link", outside)
    assert "&lt;script&gt;" in text and "<script>" not in text.replace("<script>\nwindow", "")
    assert 'class="l progression"' in text and "+30.0 %" in text
