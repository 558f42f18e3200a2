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

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calcimage.pixels import DEFAULT_PIXEL_MODEL, PIXEL_FEATURES  # noqa: E402
from calcimage.segment import SegmentParams, segment, segmentation_pixel_features  # noqa: E402
from train_candidates import (  # noqa: E402
    collect, describe, fit_and_write, training_args, training_film, training_pair,
)

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
    return _samples(*training_film(seed), params, seed, negatives)


def pair_samples(seed: int, params: SegmentParams, negatives: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`film_samples` of both films of the phantom pair of ``seed``."""
    parts = [_samples(film, truth, params, seed + i, negatives)
             for i, (film, truth) in enumerate(training_pair(seed))]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def main(argv: list[str] | None = None) -> int:
    ap = training_args(__doc__.split("\n")[1], TRAINING_SEEDS, TRAINING_PAIR_SEEDS, DEFAULT_PIXEL_MODEL)
    ap.add_argument("--negatives", type=int, default=NEGATIVES_PER_FILM,
                    help=f"negatives drawn per film at most (default {NEGATIVES_PER_FILM})")
    args = ap.parse_args(argv)
    x, y = collect(args, film_samples, pair_samples, "pixels", negatives=args.negatives)
    # Millions of rows: the export is checked on a fixed draw of 20 000 (float32 features).
    fit_and_write(x, y, HGB_SETTINGS, PIXEL_FEATURES, describe(args, "pixels", "train_pixels.py"),
                  args.out, tolerance=1e-6, n_check=20_000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
