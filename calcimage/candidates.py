"""Scoring of candidate lesions: which thresholded components are calcinosis.

Segmentation thresholds low (``SegmentParams.k_sigma``) so faint lesions become candidates,
then scores every candidate with a small boosted-tree model over per-component features
(contrast in local noise sigmas, size, shape, position against bone and skin) and keeps those
scoring at least ``SegmentParams.min_score``. The model is trained on phantom films whose
seeds are reserved for it (``benchmarks/train_candidates.py``; docs/accuracy.md) and shipped as
JSON (``calcimage/models/candidates.json``): evaluating it needs numpy only, and the file
does not depend on the version of the library that trained it.

Features (:data:`FEATURES`, one row per component, in label order):

- ``log_area_mm2``, ``log_major_mm``: size;
- ``z_max``, ``z_p90``, ``z_median``: flattened contrast over the local noise sigma;
- ``log_z_integrated``: mean contrast in sigmas × sqrt(area in mm²), Rose's criterion for an
  extended faint object;
- ``smooth_z_max``: peak of the flattened film smoothed at 1 mm, over its robust sigma in the
  tissue;
- ``bone_fraction``, ``outline_min_mm``, ``outline_mean_mm``, ``bone_axis_cos``: share on
  bone, distance to the bone outline (100 mm where there is no bone) and alignment with the
  bone's principal axis (cortex is long and parallel to it);
- ``elongation``, ``solidity``: shape;
- ``skin_mm``: mean distance to the edge of the tissue.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage as ndi
from scipy.special import expit

from calcimage.errors import ParameterError

__all__ = ["FEATURES", "TreeModel", "load_model", "load_tree_model", "model_digest", "predict_proba",
           "component_features"]

FEATURES = (
    "log_area_mm2", "z_max", "z_p90", "z_median", "log_z_integrated", "smooth_z_max",
    "bone_fraction", "outline_min_mm", "outline_mean_mm", "elongation", "solidity", "skin_mm",
    "bone_axis_cos", "log_major_mm",
)
#: Distance to the bone outline reported on films without bone (mm).
NO_BONE_MM = 100.0
#: Scale of the smoothed contrast feature (mm).
SMOOTH_MM = 1.0
#: The scripts that write tree models (named in error messages).
_TRAINERS = "benchmarks/train_candidates.py or benchmarks/train_pixels.py"
DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "candidates.json"


@dataclass(frozen=True, eq=False)
class TreeModel:
    """A binary gradient-boosted tree ensemble (sklearn's HistGradientBoostingClassifier layout).

    Attributes
    ----------
    features
        Names of the input columns, in order.
    baseline
        Raw score (log-odds) before the trees.
    feature, threshold, left, right, value, is_leaf
        One array per tree, indexed by node: a sample goes left when
        ``x[feature] <= threshold``; a leaf adds ``value`` to the raw score.
    description
        How the model was trained (seeds, candidate threshold), for the record.
    """

    features: tuple[str, ...]
    baseline: float
    feature: tuple[np.ndarray, ...]
    threshold: tuple[np.ndarray, ...]
    left: tuple[np.ndarray, ...]
    right: tuple[np.ndarray, ...]
    value: tuple[np.ndarray, ...]
    is_leaf: tuple[np.ndarray, ...]
    description: str = ""

    @classmethod
    def from_dict(cls, data: dict, source: str = "model") -> TreeModel:
        """Build from the JSON layout written by ``benchmarks/train_candidates.py``."""
        try:
            trees = data["trees"]
            model = cls(
                features=tuple(data["features"]),
                baseline=float(data["baseline"]),
                feature=tuple(np.asarray(t["feature"], np.intp) for t in trees),
                threshold=tuple(np.asarray(t["threshold"], np.float64) for t in trees),
                left=tuple(np.asarray(t["left"], np.intp) for t in trees),
                right=tuple(np.asarray(t["right"], np.intp) for t in trees),
                value=tuple(np.asarray(t["value"], np.float64) for t in trees),
                is_leaf=tuple(np.asarray(t["is_leaf"], bool) for t in trees),
                description=str(data.get("description", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ParameterError(f"{source}: not a tree model ({exc!r}); write one with "
                                 f"{_TRAINERS}") from exc
        n_feat = len(model.features)
        for i, arrays in enumerate(zip(model.feature, model.threshold, model.left, model.right,
                                       model.value, model.is_leaf)):
            n = len(arrays[0])
            if n == 0 or any(len(a) != n for a in arrays):
                raise ParameterError(f"{source}: tree {i} is malformed; write the model "
                                     f"with {_TRAINERS}")
            inner = ~arrays[5]
            idx = np.flatnonzero(inner)
            # Children come after their parent (as scikit-learn writes them): every path ends.
            if (np.any(arrays[0][inner] < 0) or np.any(arrays[0][inner] >= n_feat)
                    or np.any(arrays[2][inner] <= idx) or np.any(arrays[2][inner] >= n)
                    or np.any(arrays[3][inner] <= idx) or np.any(arrays[3][inner] >= n)):
                raise ParameterError(f"{source}: tree {i} is malformed; write the model "
                                     f"with {_TRAINERS}")
        return model

    def to_dict(self) -> dict:
        """The JSON layout read by :meth:`from_dict`."""
        return {
            "description": self.description,
            "features": list(self.features),
            "baseline": self.baseline,
            "trees": [
                {"feature": f.tolist(), "threshold": t.tolist(), "left": lo.tolist(),
                 "right": r.tolist(), "value": v.tolist(), "is_leaf": leaf.tolist()}
                for f, t, lo, r, v, leaf in zip(self.feature, self.threshold, self.left,
                                                self.right, self.value, self.is_leaf)
            ],
        }


def load_tree_model(path: Path, features: tuple[str, ...], what: str, script: str) -> TreeModel:
    """Read a :class:`TreeModel` (JSON) over ``features``; ``what`` names it and ``script``
    writes it, in the error messages.

    Raises
    ------
    ParameterError
        The file is missing, is not JSON, or does not describe a tree model over ``features``.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ParameterError(f"{path}: cannot read the {what} ({exc}); pass the path of "
                             f"a JSON model written by {script}") from exc
    model = TreeModel.from_dict(data, str(path))
    if model.features != features:
        raise ParameterError(f"{path}: the model's features {list(model.features)} are not "
                             f"calcimage's {list(features)}; retrain it with {script}")
    return model


@functools.lru_cache(maxsize=4)
def load_model(path: str | Path | None = None) -> TreeModel:
    """Read a candidate model (JSON); ``None`` is the model shipped with calcimage.

    Raises
    ------
    ParameterError
        The file is missing, is not JSON, or does not describe a tree model over
        :data:`FEATURES`.
    """
    return load_tree_model(DEFAULT_MODEL if path is None else Path(path), FEATURES,
                           "candidate model", "benchmarks/train_candidates.py")


@functools.lru_cache(maxsize=4)
def model_digest(path: str | Path | None = None) -> str:
    """First 16 hex digits of the SHA-256 of a model file (``None``: the shipped one), for
    provenance and cache keys: the file is part of the parameters."""
    p = DEFAULT_MODEL if path is None else Path(path)
    try:
        return hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    except OSError as exc:
        raise ParameterError(f"{p}: cannot read the candidate model ({exc})") from exc


def predict_proba(model: TreeModel, x: np.ndarray) -> np.ndarray:
    """Probability (0..1) that each row of ``x`` (n, features) is a lesion."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)  # float32 rows compare exactly with the float64 thresholds
    if x.ndim != 2 or x.shape[1] != len(model.features):
        raise ValueError(f"x has shape {x.shape}; expected (n, {len(model.features)})")
    raw = np.full(len(x), model.baseline)
    all_rows = np.arange(len(x))
    for feat, thr, left, right, value, leaf in zip(model.feature, model.threshold, model.left,
                                                   model.right, model.value, model.is_leaf):
        if leaf[0]:
            raw += value[0]
            continue
        # Rows leave the walk as they reach a leaf, so each level visits only those still in it.
        rows, node = all_rows, np.zeros(len(x), np.intp)
        while len(rows):
            node = np.where(x[rows, feat[node]] <= thr[node], left[node], right[node])
            done = leaf[node]
            raw[rows[done]] += value[node[done]]
            rows, node = rows[~done], node[~done]
    return expit(raw)  # 1 / (1 + exp(-raw)), without overflow for very negative scores


def component_features(labels: np.ndarray, flat: np.ndarray, sigma_c: np.ndarray,
                       bone_c: np.ndarray, tissue_c: np.ndarray,
                       spacing_mm: tuple[float, float], bone_axis: float | None,
                       first: int = 1) -> np.ndarray:
    """Feature rows (:data:`FEATURES`) of the components ``first``..n of ``labels`` (1..n;
    a missing id gets a row of zeros).

    Parameters
    ----------
    labels
        int (rows, cols) components, full size.
    flat
        Flattened film (contrast over the local background), full size.
    sigma_c, bone_c, tissue_c
        Local noise sigma, bone and tissue masks on the reduced working grid.
    spacing_mm
        (row, col) pixel spacing of the full-size film.
    bone_axis
        Angle of the bone's principal axis (:func:`calcimage.segment.axes_mm` convention), or
        None without bone.
    first
        The first id given a row (row ``i`` is id ``first + i``): a label image can hold
        components whose rows are known already.
    """
    from calcimage.segment import _bilinear_at, axes_mm, robust_sigma  # segment imports this module

    if first < 1:
        raise ValueError(f"first must be at least 1, got {first}")
    n = int(labels.max()) if labels.size else 0
    out = np.zeros((max(n - first + 1, 0), len(FEATURES)), np.float64)
    if len(out) == 0:
        return out
    rows, cols = labels.shape
    wshape = sigma_c.shape
    ws = math.sqrt(spacing_mm[0] * spacing_mm[1] * (rows / wshape[0]) * (cols / wshape[1]))
    # Working-grid maps: distances to the bone outline and to the edge of the tissue, and the
    # contrast smoothed at SMOOTH_MM over its robust sigma in the tissue.
    if bone_c.any():
        # Beyond the image's edge is outline for the bone's inside, not bone for the outside.
        outline = np.where(bone_c, _distance_inside(bone_c),
                           _distance_inside(~bone_c, edge_outside=False)) * ws
    else:
        outline = np.full(wshape, NO_BONE_MM)
    skin = _distance_inside(tissue_c) * ws
    flat_c = cv2.resize(flat, (wshape[1], wshape[0]), interpolation=cv2.INTER_AREA)
    smooth_c = cv2.GaussianBlur(flat_c, (0, 0), SMOOTH_MM / ws)
    s_sig = robust_sigma(smooth_c[tissue_c]) if tissue_c.any() else 0.0
    s_sig = s_sig if s_sig > 0 else 1e-6
    objects = ndi.find_objects(labels)[first - 1:]
    pixel_area = spacing_mm[0] * spacing_mm[1]
    for i, sl in enumerate(objects):
        if sl is None:
            continue
        rr, cc = np.nonzero(labels[sl] == first + i)
        rr = rr + sl[0].start
        cc = cc + sl[1].start
        # Nearest working-grid pixel for the masks, bilinear for the smooth maps.
        rw = np.minimum((rr * wshape[0]) // rows, wshape[0] - 1)
        cw = np.minimum((cc * wshape[1]) // cols, wshape[1] - 1)
        sig = np.maximum(_bilinear_at(sigma_c, rr, cc, labels.shape), 1e-9)
        z = flat[rr, cc] / sig
        area = len(rr) * pixel_area
        major, minor, orientation = axes_mm(np.column_stack([rr, cc]), spacing_mm)
        hull_solidity = _solidity(rr, cc)
        axis_cos = abs(math.cos(orientation - bone_axis)) if bone_axis is not None else 0.0
        out[i] = (
            math.log(area), float(z.max()), float(np.percentile(z, 90)), float(np.median(z)),
            math.log(max(float(z.mean()) * math.sqrt(area), 1e-3)),
            float(_bilinear_at(smooth_c, rr, cc, labels.shape).max()) / s_sig,
            float(bone_c[rw, cw].mean()), float(outline[rw, cw].min()),
            float(outline[rw, cw].mean()), major / max(minor, 1e-9), hull_solidity,
            float(skin[rw, cw].mean()), axis_cos, math.log(max(major, 1e-3)),
        )
    return out


def _distance_inside(mask: np.ndarray, edge_outside: bool = True) -> np.ndarray:
    """Pixels from each pixel of ``mask`` to the nearest pixel outside it, and to the image's
    edge when ``edge_outside`` (scipy's transform of a mask without any outside pixel is not
    defined; the caller makes sure there is one otherwise)."""
    padded = np.pad(mask, 1, constant_values=not edge_outside)
    return ndi.distance_transform_edt(padded)[1:-1, 1:-1]


def _solidity(rr: np.ndarray, cc: np.ndarray) -> float:
    """Pixel count over the area of the convex hull of the pixels' squares (as skimage)."""
    if len(rr) < 3:
        return 1.0
    pts = np.concatenate([np.column_stack([rr + dr, cc + dc]) for dr in (-0.5, 0.5)
                          for dc in (-0.5, 0.5)]).astype(np.float32)
    hull = cv2.convexHull(pts)
    return float(min(1.0, len(rr) / max(cv2.contourArea(hull), 1e-9)))
