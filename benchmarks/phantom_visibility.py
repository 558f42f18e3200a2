#!/usr/bin/env python
"""How visible are the phantom's lesions? Contrast-to-noise ratio of every true lesion. A script.

One command (from the repository root)::

    .venv/bin/python benchmarks/phantom_visibility.py             # tuning seeds 0-49
    .venv/bin/python benchmarks/phantom_visibility.py --seeds 0-9 --min-cnr 0

Films are the accuracy benchmark's variants (``benchmarks/accuracy.py``'s ``film_case``:
0.1 / 0.2 mm, faint / dense / full density, 0-2 bones, 10-16 bits) on **tuning seeds only**
(0-49; the held-out seeds 1000+ / 2000+ are never rendered here).

Per true lesion (measured on the rendered film, independently of the generator's own
estimate):

- ``contrast``: its peak added attenuation in log units (``truth.contrasts``);
- ``r``: its scale, the radius of the largest disc inside its footprint (a nodule's radius,
  a plaque's half-width), at least one pixel;
- ``background``: the fluctuation of the film's density ``D = -ln I`` at the lesion's scale
  around it: ``D`` band-passed (Gaussian of sigma ``r / 2`` -- the disc of the lesion's
  area, Rose's integration area -- minus a Gaussian of sigma ``2 r``, which removes the smooth
  background), robust standard deviation (1.4826 x MAD) over a ring 1-3 ``r`` outside the
  footprint (2-4 radii from a nodule's centre) within the exposed body, other lesions
  excluded. It holds quantum noise and anatomical texture alike;
- ``signal``: the lesion's added attenuation seen through the same band-pass, from the
  generator (``truth.signals``; about half of ``contrast``: the mean over the lesion's area,
  less its surround);
- ``CNR = signal / background``, Rose's signal-to-noise ratio: ~ 5 is needed for reliable
  detection by a human observer. (Until session 3 the phantom and this script divided the
  *peak* contrast, which overstated the ratio about 1.9-fold.)

Prints the CNR distribution, the share of lesions with CNR < 3 and < 5, split by soft tissue /
over bone, and (with the generator's field ``truth.background_std`` when present) how the
generator's model estimate compares with this measurement. JSON goes to ``--out``
(default benchmarks/out/phantom_visibility.json, gitignored).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calcimage.phantom import make_phantom  # noqa: E402

_D_LO, _D_HI = -0.7, 5.0  # calcimage.phantom's density mapping of the stored values


def _film_case(seed: int) -> Any:
    spec = importlib.util.spec_from_file_location("_accuracy", ROOT / "benchmarks" / "accuracy.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["_accuracy"] = module
    spec.loader.exec_module(module)
    return module.film_case(seed)


def lesion_visibility(phantom: Any) -> list[dict[str, Any]]:
    """Per-lesion contrast, scale, background fluctuation and CNR measured on the film."""
    truth = phantom.truth
    p = phantom.params
    top = float(2**p.bits_stored - 1)
    density = phantom.film.pixels.astype(np.float64) * ((_D_HI - _D_LO) / top) + _D_LO
    labels = truth.labels
    usable = truth.masks["body"] & ~truth.masks["collimation"] & ~truth.masks["marker"]
    out = []
    for k in range(truth.n_lesions):
        rows, cols = np.nonzero(labels == k + 1)
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        foot = (labels[r0:r1, c0:c1] == k + 1).astype(np.uint8)
        r_px = max(float(cv2.distanceTransform(np.pad(foot, 1), cv2.DIST_L2, 5).max()), 1.0)
        pad = int(np.ceil(3 * r_px + 6 * 2 * r_px)) + 2
        a0, a1 = max(r0 - pad, 0), min(r1 + pad, labels.shape[0])
        b0, b1 = max(c0 - pad, 0), min(c1 + pad, labels.shape[1])
        patch = density[a0:a1, b0:b1]
        band = cv2.GaussianBlur(patch, (0, 0), r_px / 2.0) - cv2.GaussianBlur(patch, (0, 0), 2.0 * r_px)
        lab = labels[a0:a1, b0:b1]
        outside = (lab != k + 1).astype(np.uint8)
        dist = cv2.distanceTransform(outside, cv2.DIST_L2, 5)
        others = ((lab != 0) & (lab != k + 1)).astype(np.uint8)
        near_other = cv2.distanceTransform(1 - others, cv2.DIST_L2, 5) < r_px
        ring = (dist >= r_px) & (dist <= 3 * r_px) & usable[a0:a1, b0:b1] & ~near_other
        values = band[ring]
        if values.size < 8:
            continue
        mad = float(np.median(np.abs(values - np.median(values))))
        background = 1.4826 * mad
        contrast = float(truth.contrasts[k])
        signal = float(truth.signals[k])
        entry = {
            "label": k + 1,
            "kind": truth.kinds[k].value,
            "over_bone": bool(truth.over_bone[k]),
            "area_mm2": float(truth.areas_mm2[k]),
            "r_mm": r_px * p.spacing_mm,
            "contrast": contrast,
            "signal": signal,
            "background": background,
            "cnr": signal / background if background > 0 else float("inf"),
        }
        model = getattr(truth, "background_std", None)
        if model is not None:
            entry["model_background"] = float(model[k])
        out.append(entry)
    return out


def parse_seeds(text: str) -> list[int]:
    """``"0-49"`` or ``"0,3,7"`` -> seeds; refuses held-out seeds (>= 1000)."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds += list(range(int(lo), int(hi or lo) + 1))
    if any(s >= 1000 for s in seeds):
        raise SystemExit("seeds >= 1000 are held out for accuracy; use tuning seeds 0-49")
    return seeds


def _summary(entries: list[dict[str, Any]]) -> dict[str, Any]:
    if not entries:
        return {"n": 0}
    cnr = np.array([e["cnr"] for e in entries])
    contrast = np.array([e["contrast"] for e in entries])
    background = np.array([e["background"] for e in entries])
    q = lambda a: [round(float(v), 4) for v in np.percentile(a, [5, 25, 50, 75, 95])]  # noqa: E731
    return {
        "n": int(cnr.size),
        "cnr_p5_25_50_75_95": q(cnr),
        "contrast_p5_25_50_75_95": q(contrast),
        "background_p5_25_50_75_95": q(background),
        "share_cnr_below_3": round(float(np.mean(cnr < 3)), 3),
        "share_cnr_below_5": round(float(np.mean(cnr < 5)), 3),
        "share_contrast_below_0.2": round(float(np.mean(contrast < 0.2)), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-49")
    parser.add_argument("--min-cnr", type=float, default=None,
                        help="override PhantomParams.min_lesion_cnr (e.g. 0 = no visibility floor)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "phantom_visibility.json")
    args = parser.parse_args(argv)
    entries: list[dict[str, Any]] = []
    for seed in parse_seeds(args.seeds):
        params = _film_case(seed).phantom_params()
        if args.min_cnr is not None:
            params = replace(params, min_lesion_cnr=args.min_cnr)
        phantom = make_phantom(seed, params)
        for e in lesion_visibility(phantom):
            e["seed"] = seed
            entries.append(e)
    groups = {
        "all": entries,
        "soft tissue": [e for e in entries if not e["over_bone"]],
        "over bone": [e for e in entries if e["over_bone"]],
        "nodules": [e for e in entries if e["kind"] == "nodule"],
        "plaques": [e for e in entries if e["kind"] == "plaque"],
    }
    report = {name: _summary(group) for name, group in groups.items()}
    print(f"seeds {args.seeds}: {len(entries)} lesions (CNR = peak added attenuation / "
          "background fluctuation at the lesion's scale)")
    print(f"{'group':<12} {'n':>4} {'CNR p5/p25/p50/p75/p95':<36} {'<3':>6} {'<5':>6} "
          f"{'bg p50':>8} {'C<0.2':>6}")
    for name, s in report.items():
        if not s["n"]:
            continue
        cnr = "/".join(f"{v:.1f}" for v in s["cnr_p5_25_50_75_95"])
        print(f"{name:<12} {s['n']:>4} {cnr:<36} {s['share_cnr_below_3']:>6.2f} "
              f"{s['share_cnr_below_5']:>6.2f} {s['background_p5_25_50_75_95'][2]:>8.4f} "
              f"{s['share_contrast_below_0.2']:>6.2f}")
    with_model = [e for e in entries if "model_background" in e]
    if with_model:
        ratio = np.array([e["background"] / e["model_background"] for e in with_model])
        report["measured_over_model_background_p5_50_95"] = [
            round(float(v), 3) for v in np.percentile(ratio, [5, 50, 95])]
        print("measured / generator-model background: p5 {:.2f}, median {:.2f}, p95 {:.2f}".format(
            *report["measured_over_model_background_p5_50_95"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"seeds": args.seeds, "summary": report, "lesions": entries}, indent=1))
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
