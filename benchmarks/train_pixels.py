#!/usr/bin/env python
"""Train the pixel model of segmentation (calcimage/models/pixels.json). A script.

One command (from the repository root; needs scikit-learn: ``pip install -e ".[train]"``)::

    .venv/bin/python benchmarks/train_pixels.py   # films 20000-20199, pairs 30000-30039

Seeds
-----
The training seeds of the candidate model (benchmarks/train_candidates.py) serve this model
too: **films 20000-20199 and both films of pairs 30000-30039**. No accuracy figure is quoted
on them; the tuning seeds and every held-out range stay out.

Every film is segmented with the default SegmentParams (or ``--config``'s ``[segment]``)
with the pixel step off (``pixel_min_prob = 0``: the model does not see its own output). The
examined pixels of :func:`calcimage.pixels.pixel_features` are the samples: a pixel is a
positive when at least half of its grid cell lies on a true lesion. Pixels of a true lesion
that are not examined are added as positives too. At most ``--negatives`` negatives per film
(a fixed random draw) keep films of many candidates from dominating. A scikit-learn
HistGradientBoostingClassifier (fixed settings and random state) is fitted and written as
JSON, evaluated by calcimage with numpy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calcimage.candidates import predict_proba  # noqa: E402
from calcimage.params import load_config  # noqa: E402
from calcimage.phantom import make_phantom  # noqa: E402
from calcimage.pixels import DEFAULT_PIXEL_MODEL, PIXEL_FEATURES  # noqa: E402
from calcimage.segment import SegmentParams, segment, segmentation_pixel_features  # noqa: E402
from accuracy import _film_via_dicom, film_case  # noqa: E402
import accuracy_pairs  # noqa: E402
from _seeds import parse_seeds  # noqa: E402
from train_candidates import export  # noqa: E402

TRAINING_SEEDS = "20000-20199"
TRAINING_PAIR_SEEDS = "30000-30039"
HGB_SETTINGS = dict(max_iter=200, learning_rate=0.1, max_leaf_nodes=31, random_state=0)
NEGATIVES_PER_FILM = 30_000


def _samples(film: object, truth: np.ndarray, params: SegmentParams, seed: int,
             negatives: int) -> tuple[np.ndarray, np.ndarray]:
    seg = segment(film, replace(params, pixel_min_prob=0.0))  # type: ignore[arg-type]
    x, examined, grid = segmentation_pixel_features(seg)
    y = grid.resize(truth > 0) >= 0.5
    sel = examined | y
    xs, ys = x[sel], y[sel]
    neg = np.flatnonzero(~ys)
    if len(neg) > negatives:
        keep = np.random.default_rng(seed).choice(neg, negatives, replace=False)
        idx = np.sort(np.concatenate([np.flatnonzero(ys), keep]))
        xs, ys = xs[idx], ys[idx]
    return xs, ys


def film_samples(seed: int, params: SegmentParams, negatives: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel features and positive flags of the film of ``seed``."""
    case = film_case(seed)
    phantom = make_phantom(seed, case.phantom_params())
    film = _film_via_dicom(phantom, case)[0] if case.monochrome1 else phantom.film
    return _samples(film, phantom.truth.labels, params, seed, negatives)


def pair_samples(seed: int, params: SegmentParams, negatives: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`film_samples` of both films of the phantom pair of ``seed``."""
    case = accuracy_pairs.pair_case(seed)
    base = make_phantom(seed, case.phantom_params())
    follow = accuracy_pairs.make_followup(base, seed + 50_000, case.followup)
    film, truth = follow.film, follow.truth
    if case.follow_spacing_mm is not None:
        film, truth = accuracy_pairs.resampled_followup(film, truth, case.follow_spacing_mm)
    parts = [_samples(base.film, base.truth.labels, params, seed, negatives),
             _samples(film, truth.labels, params, seed + 1, negatives)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--seeds", default=TRAINING_SEEDS, help=f"training films (default {TRAINING_SEEDS})")
    ap.add_argument("--pair-seeds", default=TRAINING_PAIR_SEEDS,
                    help=f"training pairs, both films (default {TRAINING_PAIR_SEEDS}; '' for none)")
    ap.add_argument("--config", type=Path, default=None,
                    help="TOML parameters: the model is trained for its [segment] section")
    ap.add_argument("--negatives", type=int, default=NEGATIVES_PER_FILM,
                    help=f"negatives drawn per film at most (default {NEGATIVES_PER_FILM})")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=DEFAULT_PIXEL_MODEL)
    args = ap.parse_args(argv)
    from sklearn.ensemble import HistGradientBoostingClassifier

    params = load_config(args.config).segment if args.config else SegmentParams()
    seeds = parse_seeds(args.seeds)
    pair_seeds = parse_seeds(args.pair_seeds) if args.pair_seeds else []
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as ex:
        parts = (list(ex.map(partial(film_samples, params=params, negatives=args.negatives), seeds))
                 + list(ex.map(partial(pair_samples, params=params, negatives=args.negatives), pair_seeds)))
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    print(f"{len(seeds)} films and {len(pair_seeds)} pairs, {len(y)} pixels "
          f"({int(y.sum())} on lesions) in {time.perf_counter() - t0:.0f} s")
    clf = HistGradientBoostingClassifier(**HGB_SETTINGS).fit(x, y)
    model = export(clf, f"HistGradientBoostingClassifier({HGB_SETTINGS}) on the pixels of "
                        f"phantom films {args.seeds} and pairs {args.pair_seeds or 'none'} "
                        f"(benchmarks/train_pixels.py{' --config ' + str(args.config) if args.config else ''})",
                   PIXEL_FEATURES)
    check = np.random.default_rng(0).choice(len(x), min(len(x), 20_000), replace=False)
    diff = np.abs(predict_proba(model, x[check]) - clf.predict_proba(x[check])[:, 1]).max()
    if diff > 1e-6:
        raise AssertionError(f"exported model differs from scikit-learn's by {diff:.3g}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(model.to_dict(), separators=(",", ":")) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {args.out} ({len(model.feature)} trees)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
