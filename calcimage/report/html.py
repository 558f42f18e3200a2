"""report.html of ``calcimage study``: one self-contained file.

Images are embedded as ``data:`` URIs, the trend plot is inline SVG generated here, the only
script is a few inline lines; nothing is fetched from the network, so the file can be mailed
or archived as it is. Per group: a trend plot (total area and lesion count over months since
baseline, with the band of "stable" change around the baseline area), the table of films, the
films' overlays and the comparison overlays.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2

from calcimage.report.atomic import write_text
from calcimage.report.overlay import KIND_COLOURS, STATUS_COLOURS, thumbnail

__all__ = ["render_report", "write_report", "trend_svg"]

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1b1b1b;background:#fff}
h1{font-size:1.5em;margin-bottom:4px} h2{margin-top:36px;border-bottom:1px solid #ccc;padding-bottom:4px}
.meta{color:#555;font-size:.9em}
table{border-collapse:collapse;margin:12px 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right} th{background:#f2f2f2}
td.l,th.l{text-align:left}
.figs{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;max-width:100%} figure img{width:100%;height:auto;border:1px solid #ccc}
figure.film{width:340px} figure.pair{width:700px}
figcaption{font-size:.85em;color:#444}
.legend span{display:inline-block;margin-right:12px;font-size:.85em}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}
.progression{color:#b00020;font-weight:600} .regression{color:#006400;font-weight:600}
.failed{color:#b00020}
"""

# Sets data-images-loaded / data-images-total on <body> once every image has settled, so a
# headless browser (and the test suite) can tell the embedded images really decoded.
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-total', String(imgs.length));
  document.body.setAttribute('data-images-loaded', String(ok));
});
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _hex(bgr: tuple[int, int, int]) -> str:
    b, g, r = bgr
    return f"#{r:02x}{g:02x}{b:02x}"


def _img_tag(path: Path, alt: str, max_side: int = 700) -> str:
    # Embedded as JPEG: a film's noise makes PNG ten times larger, and the full-resolution
    # PNG stays beside the report for close inspection.
    image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    if image is None:
        return f'<p class="failed">missing picture: {_esc(alt)}</p>'
    ok, buf = cv2.imencode(".jpg", thumbnail(image, max_side), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        return f'<p class="failed">cannot encode picture: {_esc(alt)}</p>'
    data = base64.b64encode(buf.tobytes()).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/jpeg;base64,{data}">'


def _fmt(value: Any, spec: str = ".2f", suffix: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:{spec}}{suffix}"
    return f"{value}{suffix}"


def trend_svg(
    rows: Sequence[Mapping[str, Any]],
    *,
    progression_pct: float = 25.0,
    regression_pct: float = -25.0,
    width: int = 640,
    height: int = 300,
) -> str:
    """Inline SVG: total area (solid, left axis) and lesion count (dashed, right axis) per
    film against months since baseline, with the stable band around the baseline area."""
    use_mm = all(r.get("total_area_mm2") is not None for r in rows)
    area_key, area_unit = ("total_area_mm2", "mm²") if use_mm else ("total_area_px", "px")
    dated = all(r.get("months_since_baseline") is not None for r in rows)
    xs = [float(r["months_since_baseline"]) if dated else float(i) for i, r in enumerate(rows)]
    areas = [float(r.get(area_key) or 0.0) for r in rows]
    counts = [float(r.get("lesion_count") or 0) for r in rows]
    base_area = areas[0] if areas else 0.0
    band_hi = base_area * (1 + progression_pct / 100)
    band_lo = max(0.0, base_area * (1 + regression_pct / 100))
    left, right, top, bottom = 64, 56, 20, 44
    pw, ph = width - left - right, height - top - bottom
    x_max = max(xs + [1.0])
    a_max = max(areas + [band_hi, 1e-9]) * 1.1
    # Count axis: a multiple of 4 so its four ticks are whole numbers.
    c_max = float(max(4, math.ceil(max(counts + [1.0]) * 1.1 / 4) * 4))

    def px(x: float) -> float:
        return left + pw * x / x_max

    def pa(a: float) -> float:
        return top + ph * (1 - a / a_max)

    def pc(c: float) -> float:
        return top + ph * (1 - c / c_max)

    out = [
        f'<svg width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="trend of total area and lesion count">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>',
    ]
    if base_area > 0:
        y1, y2 = pa(band_hi), pa(band_lo)
        out.append(
            f'<rect x="{left}" y="{y1:.1f}" width="{pw}" height="{y2 - y1:.1f}" fill="#4a90d9" '
            f'fill-opacity="0.15"><title>stable band {regression_pct:+g} % .. {progression_pct:+g} %</title></rect>'
        )
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{pa(base_area):.1f}" y2="{pa(base_area):.1f}" '
            'stroke="#4a90d9" stroke-dasharray="2 3"/>'
        )
    for k in range(5):  # axis ticks
        a = a_max * k / 4
        c = c_max * k / 4
        y = pa(a)
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{a:.3g}</text>')
        out.append(f'<text x="{left + pw + 6}" y="{y + 4:.1f}" font-size="11" fill="#d2691e">{int(round(c))}</text>')
    for x, r in zip(xs, rows):
        label = f"{x:.1f}" if dated else str(int(x))
        out.append(
            f'<text x="{px(x):.1f}" y="{top + ph + 16}" font-size="11" text-anchor="middle">{_esc(label)}</text>'
        )
    x_label = "months since baseline" if dated else "film (in date order; some films undated)"
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 6}" font-size="12" text-anchor="middle">{_esc(x_label)}</text>'
    )
    out.append(
        f'<text x="14" y="{top + ph / 2}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + ph / 2})">total area ({area_unit})</text>'
    )
    out.append(
        f'<text x="{width - 10}" y="{top + ph / 2}" font-size="12" text-anchor="middle" fill="#d2691e" '
        f'transform="rotate(90 {width - 10} {top + ph / 2})">lesion count</text>'
    )
    if rows:
        area_pts = " ".join(f"{px(x):.1f},{pa(a):.1f}" for x, a in zip(xs, areas))
        count_pts = " ".join(f"{px(x):.1f},{pc(c):.1f}" for x, c in zip(xs, counts))
        out.append(f'<polyline points="{area_pts}" fill="none" stroke="#1f4e9e" stroke-width="2"/>')
        out.append(
            f'<polyline points="{count_pts}" fill="none" stroke="#d2691e" stroke-width="2" stroke-dasharray="6 4"/>'
        )
        for x, a, c in zip(xs, areas, counts):
            out.append(f'<circle cx="{px(x):.1f}" cy="{pa(a):.1f}" r="4" fill="#1f4e9e"/>')
            out.append(f'<rect x="{px(x) - 3.5:.1f}" y="{pc(c) - 3.5:.1f}" width="7" height="7" fill="#d2691e"/>')
    out.append("</svg>")
    return "\n".join(out)


def render_report(
    out_dir: Path,
    groups: Mapping[str, Sequence[Any]],
    pairs: Mapping[tuple[str, str], Any],
    rows: Sequence[Mapping[str, Any]],
    *,
    failures: Sequence[Any] = (),
    progression_pct: float = 25.0,
    regression_pct: float = -25.0,
    generated: str = "",
) -> str:
    """The HTML text of report.html (see the module docstring)."""
    import calcimage

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>calcimage study report</title>",
        f"<style>{_CSS}</style>",
        f"<script>{_SCRIPT}</script>",
        "</head><body>",
        "<h1>calcimage study report</h1>",
        f'<p class="meta">calcimage {_esc(calcimage.__version__)}'
        + (f" · generated {_esc(generated)}" if generated else "")
        + f" · {len(groups)} group(s), {len(rows)} film(s)"
        + f" · category: total area change &gt; {progression_pct:+g} % progression, &lt; {regression_pct:+g} % regression, else stable</p>",
        '<p class="legend">outlines by kind: '
        + "".join(f'<span><i style="background:{_hex(c)}"></i>{_esc(k)}</span>' for k, c in KIND_COLOURS.items())
        + " · by change: "
        + "".join(f'<span><i style="background:{_hex(c)}"></i>{_esc(s)}</span>' for s, c in STATUS_COLOURS.items())
        + "</p>",
    ]
    columns = ("film", "date", "months_since_baseline", "lesion_count", "total_area_mm2", "total_area_px",
               "change_pct", "category")
    for group, films in groups.items():
        group_rows = [r for r in rows if r["group"] == group]
        parts.append(f'<section class="group" id="{_esc(group)}"><h2>{_esc(group)}</h2>')
        parts.append(trend_svg(group_rows, progression_pct=progression_pct, regression_pct=regression_pct))
        parts.append("<table><tr>" + "".join(
            f'<th class="{"l" if c in ("film", "date", "category") else ""}">{_esc(c)}</th>' for c in columns
        ) + "</tr>")
        for r in group_rows:
            cells = []
            for c in columns:
                value = r.get(c)
                text = _fmt(value, "+.1f", " %") if c == "change_pct" else _fmt(value)
                cls = "l" if c in ("film", "date", "category") else ""
                if c == "category" and value in ("progression", "regression", "failed"):
                    cls += f" {value}"
                cells.append(f'<td class="{cls.strip()}">{_esc(text)}</td>')
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
        parts.append('<div class="figs">')
        for film in films:
            caption = f"{film.film_id}: {film.lesion_count} lesion(s)"
            parts.append(f"<figure class=\"film\">{_img_tag(out_dir / film.folder / 'overlay.png', caption)}"
                         f"<figcaption>{_esc(caption)}</figcaption></figure>")
        parts.append("</div>")
        comparisons = [(f, pairs.get((group, f.film_id))) for f in films[1:]]
        comparisons = [(f, p) for f, p in comparisons if p is not None and p.ok]
        if comparisons:
            parts.append('<h3>follow-up vs baseline (left: baseline, right: registered follow-up)</h3><div class="figs">')
            for film, pair in comparisons:
                caption = f"{film.film_id}: {pair.category}, total area {_fmt(pair.change_pct, '+.1f', ' %')}"
                parts.append(f"<figure class=\"pair\">{_img_tag(out_dir / pair.folder / 'overlay.png', caption, 1100)}"
                             f"<figcaption>{_esc(caption)}</figcaption></figure>")
            parts.append("</div>")
        parts.append("</section>")
    if failures:
        parts.append('<h2 class="failed">failed</h2><ul>')
        parts.extend(f"<li>{_esc(f.error)}</li>" for f in failures)
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    path: Path,
    out_dir: Path,
    groups: Mapping[str, Sequence[Any]],
    pairs: Mapping[tuple[str, str], Any],
    rows: Sequence[Mapping[str, Any]],
    *,
    failures: Sequence[Any] = (),
    progression_pct: float = 25.0,
    regression_pct: float = -25.0,
) -> None:
    """Render and atomically write report.html."""
    from calcimage.report.tables import timestamp

    write_text(path, render_report(out_dir, groups, pairs, rows, failures=failures,
                                   progression_pct=progression_pct, regression_pct=regression_pct,
                                   generated=timestamp()))
