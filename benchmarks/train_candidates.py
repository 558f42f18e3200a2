#!/usr/bin/env python
"""Train the candidate model of segmentation (calcimage/models/candidates.json). A script.

One command (from the repository root; needs scikit-learn: ``pip install -e ".[train]"``)::

    .venv/bin/python benchmarks/train_candidates.py   # films 20000-20399, pairs 30000-30149

Seeds
-----
**Training seeds: films 20000-20399 and pairs 30000-30149** are reserved for this model: no
accuracy figure is ever quoted on them, and the tuning seeds (films 0-49, pairs 100-199) and
every held-out range of benchmarks/accuracy.py and accuracy_pairs.py stay out of it. The films
are benchmarks/accuracy.py's (same variants per seed: spacing, photometry, density, bones);
the pairs are benchmarks/accuracy_pairs.py's, both films of each, so the model also sees what
a follow-up shows (lesions grown to several times their size, shrunk, new).

Every film is segmented with the default SegmentParams (or the ``[segment]`` section of
``--config``: a model for other parameters) except ``min_score = 0`` (keep every candidate); each candidate is a positive when at least 20 % of its pixels lie on one true
lesion (the benchmark's definition of a lesion that is not false) and a negative otherwise.
A scikit-learn HistGradientBoostingClassifier (fixed settings and random state) is fitted to
the features of :mod:`calcimage.candidates` and written as JSON: calcimage evaluates it with
numpy, so the shipped file does not depend on scikit-learn's version.
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
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calcimage.candidates import DEFAULT_MODEL, FEATURES, TreeModel, predict_proba  # noqa: E402
from calcimage.params import load_config  # noqa: E402
from calcimage.phantom import make_phantom  # noqa: E402
from calcimage.segment import SegmentParams, segment  # noqa: E402
from accuracy import FOUND_FRACTION, _film_via_dicom, film_case  # noqa: E402
import accuracy_pairs  # noqa: E402
from _seeds import parse_seeds  # noqa: E402

TRAINING_SEEDS = "20000-20399"
TRAINING_PAIR_SEEDS = "30000-30149"
#: The classifier's settings (fixed: the model is reproducible from the seeds alone).
HGB_SETTINGS = dict(max_iter=200, learning_rate=0.05, max_leaf_nodes=15, random_state=0)


def training_film(seed: int) -> tuple[object, np.ndarray]:
    """The film of ``seed`` (benchmarks/accuracy.py's variant) and its true labels."""
    case = film_case(seed)
    phantom = make_phantom(seed, case.phantom_params())
    film = _film_via_dicom(phantom, case)[0] if case.monochrome1 else phantom.film
    return film, phantom.truth.labels


def training_pair(seed: int) -> tuple[tuple[object, np.ndarray], tuple[object, np.ndarray]]:
    """Both films of the phantom pair of ``seed`` (benchmarks/accuracy_pairs.py's), each with
    its true labels."""
    case = accuracy_pairs.pair_case(seed)
    base = make_phantom(seed, case.phantom_params())
    follow = accuracy_pairs.make_followup(base, seed + 50_000, case.followup)
    film, truth = follow.film, follow.truth
    if case.follow_spacing_mm is not None:
        film, truth = accuracy_pairs.resampled_followup(film, truth, case.follow_spacing_mm)
    return (base.film, base.truth.labels), (film, truth.labels)


def film_candidates(seed: int, params: SegmentParams) -> tuple[np.ndarray, np.ndarray]:
    """Features (n, F) and positive flags (n,) of the candidates on the film of ``seed``."""
    return _candidates(*training_film(seed), params)


def pair_candidates(seed: int, params: SegmentParams) -> tuple[np.ndarray, np.ndarray]:
    """:func:`film_candidates` of both films of the phantom pair of ``seed``."""
    parts = [_candidates(film, truth, params) for film, truth in training_pair(seed)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _candidates(film: object, truth: np.ndarray, params: SegmentParams) -> tuple[np.ndarray, np.ndarray]:
    seg = segment(film, replace(params, min_score=0.0))  # type: ignore[arg-type]
    assert seg.features is not None
    n_det, n_true = seg.n_lesions, int(truth.max())
    idx = truth.astype(np.int64).ravel() * (n_det + 1) + seg.labels.astype(np.int64).ravel()
    overlap = np.bincount(idx, minlength=(n_true + 1) * (n_det + 1)).reshape(n_true + 1, n_det + 1)
    det_px = overlap.sum(axis=0)[1:]
    best = overlap[1:, 1:].max(axis=0) if n_true else np.zeros(n_det)
    return seg.features, best >= FOUND_FRACTION * det_px


def export(clf: object, description: str, features: tuple[str, ...] = FEATURES) -> TreeModel:
    """The fitted classifier's trees in :class:`calcimage.candidates.TreeModel` form, over
    the columns ``features``."""
    trees = [predictors[0].nodes for predictors in clf._predictors]  # type: ignore[attr-defined]
    if any(np.any(n["is_categorical"]) for n in trees):
        raise ValueError("categorical splits are not supported")
    return TreeModel(
        features=features,
        baseline=float(np.ravel(clf._baseline_prediction)[0]),  # type: ignore[attr-defined]
        feature=tuple(n["feature_idx"].astype(np.intp) for n in trees),
        threshold=tuple(n["num_threshold"].astype(np.float64) for n in trees),
        left=tuple(n["left"].astype(np.intp) for n in trees),
        right=tuple(n["right"].astype(np.intp) for n in trees),
        value=tuple(n["value"].astype(np.float64) for n in trees),
        is_leaf=tuple(n["is_leaf"].astype(bool) for n in trees),
        description=description,
    )


def training_args(description: str, seeds: str, pair_seeds: str, out: Path) -> argparse.ArgumentParser:
    """The options both training scripts take: seeds, pairs, config, workers, output."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--seeds", default=seeds, help=f"training films (default {seeds})")
    ap.add_argument("--pair-seeds", default=pair_seeds,
                    help=f"training pairs, both films (default {pair_seeds}; '' for none)")
    ap.add_argument("--config", type=Path, default=None,
                    help="TOML parameters: the model is trained for its [segment] section")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=out)
    return ap


def collect(args: argparse.Namespace, film_fn: Callable[..., tuple[np.ndarray, np.ndarray]],
            pair_fn: Callable[..., tuple[np.ndarray, np.ndarray]], what: str,
            **kwargs: object) -> tuple[np.ndarray, np.ndarray]:
    """Samples (features, positive flags) of the films and pairs of ``args``, ``film_fn(seed,
    params=..., **kwargs)`` and ``pair_fn`` in ``args.workers`` processes; prints a summary."""
    params = load_config(args.config).segment if args.config else SegmentParams()
    seeds = parse_seeds(args.seeds)
    pair_seeds = parse_seeds(args.pair_seeds) if args.pair_seeds else []
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as ex:
        parts = (list(ex.map(partial(film_fn, params=params, **kwargs), seeds))
                 + list(ex.map(partial(pair_fn, params=params, **kwargs), pair_seeds)))
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    print(f"{len(seeds)} films and {len(pair_seeds)} pairs, {len(y)} {what} "
          f"({int(y.sum())} on lesions) in {time.perf_counter() - t0:.0f} s")
    return x, y


def describe(args: argparse.Namespace, what: str, script: str) -> str:
    """What a model was trained on, for its ``description``."""
    config = f" --config {args.config}" if args.config else ""
    return (f"the {what} of phantom films {args.seeds} and pairs {args.pair_seeds or 'none'} "
            f"(benchmarks/{script}{config})")


def fit_and_write(x: np.ndarray, y: np.ndarray, settings: dict, features: tuple[str, ...],
                  description: str, out: Path, tolerance: float = 1e-9,
                  n_check: int | None = None) -> TreeModel:
    """Fit a HistGradientBoostingClassifier with ``settings``, export it, check that numpy
    evaluation reproduces scikit-learn's on ``n_check`` rows (all when None) within
    ``tolerance``, and write it to ``out`` atomically."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    clf = HistGradientBoostingClassifier(**settings).fit(x, y)
    model = export(clf, f"HistGradientBoostingClassifier({settings}) on {description}", features)
    rows = (np.arange(len(x)) if n_check is None or n_check >= len(x)
            else np.random.default_rng(0).choice(len(x), n_check, replace=False))
    # The numpy evaluation must reproduce scikit-learn's (else the export is wrong).
    diff = np.abs(predict_proba(model, x[rows]) - clf.predict_proba(x[rows])[:, 1]).max()
    if diff > tolerance:
        raise AssertionError(f"exported model differs from scikit-learn's by {diff:.3g}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(model.to_dict(), separators=(",", ":")) + "\n", encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {out} ({len(model.feature)} trees)")
    return model


def main(argv: list[str] | None = None) -> int:
    ap = training_args(__doc__.split("\n")[1], TRAINING_SEEDS, TRAINING_PAIR_SEEDS, DEFAULT_MODEL)
    args = ap.parse_args(argv)
    x, y = collect(args, film_candidates, pair_candidates, "candidates")
    fit_and_write(x, y, HGB_SETTINGS, FEATURES, describe(args, "candidates", "train_candidates.py"), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
