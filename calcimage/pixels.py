"""A pixel model: which pixels of a flattened film are calcinosis, from their surroundings.

The threshold-and-rules path of :func:`calcimage.segment.segment` loses lesions that touch
anatomy: a dense plaque beside a cortical line joins the line at the hysteresis level, and the
rules that keep cortex out (line openings, the line cut, the ridge rules) take the plaque with
it. A pixel model sees each pixel with its context at several scales instead -- contrast,
curvature, how far it runs along a straight line, where the bone outline and the skin are --
and says how likely the pixel lies on a lesion. Segmentation adds, as lesions, the connected
regions it is confident about that no other step found (step 9 of ``segment``).

Features (:data:`PIXEL_FEATURES`), on a grid of ``GRID_MM`` (or the film's spacing when that is
coarser), averaged to the ``RATE_GRID_MM`` cells the model rates; ``z`` is the flattened film
over its local noise sigma:

- ``z0`` .. ``z8``: ``z`` smoothed with a Gaussian of 0 (none), 0.5, 1, 2, 4 and 8 mm;
- ``zmax3``: the largest ``z1`` within 3 mm (context: a pixel beside a bright one);
- ``l1_s``, ``l2_s``: the eigenvalues of the Hessian of ``z`` at 0.5, 1, 2 and 4 mm, scale
  normalised (``s**2 * lambda``), ``l1 <= l2``: blobs (both negative) and ridges (one);
- ``line8``, ``line30``: the largest mean of ``z0.5`` along a straight line of 8 and 30 mm
  through the pixel, over all orientations (cortex runs straight for centimetres);
- ``bone_sd``: signed distance to the bone outline (mm, positive inside, ±30 at most; -50 on
  films without bone), ``skin``: distance to the edge of the examined body (mm, ≤ 40);
- ``sig_rel``: the local sigma over the film's median sigma;
- ``bggrad1``, ``bggrad3``, ``bglap1``, ``bglap3``: gradient magnitude and Laplacian of the
  background at 1 and 3 mm, over the local sigma (bone edges are steps of the background).

The model (:class:`calcimage.candidates.TreeModel`, shipped as ``models/pixels.json``) is
trained on phantom films reserved for it (``benchmarks/train_pixels.py``).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import cv2
import numpy as np

from calcimage.candidates import TreeModel, load_tree_model, model_digest, predict_proba

__all__ = ["PIXEL_FEATURES", "GRID_MM", "PixelGrid", "pixel_features", "examined_pixel_features",
           "pixel_probability",
           "load_pixel_model", "pixel_model_digest"]

PIXEL_FEATURES = (
    "z0", "z0.5", "z1", "z2", "z4",
    "l1_0.5", "l2_0.5", "l1_1", "l2_1", "l1_2", "l2_2", "l1_4", "l2_4",
    "line8", "line30", "bone_sd", "skin", "sig_rel",
    "z8", "zmax3", "bggrad1", "bglap1", "bggrad3", "bglap3",
)
#: Pixel size the features are computed on (mm); films coarser than this are used as they are.
GRID_MM = 0.25
#: Pixel size of the cells the model rates (mm): the features averaged over 2 x 2 pixels of
#: ``GRID_MM`` (a quarter of the evaluations; the probability is smooth at that scale).
RATE_GRID_MM = 0.5
#: Pixel size on which the line features are computed (mm): they are smooth at that scale.
LINE_GRID_MM = 0.5
#: Pixels are examined where ``z`` smoothed at 0.5 mm reaches this many sigmas.
MIN_Z = 1.0
#: ``bone_sd`` on films without bone (mm).
NO_BONE_SD_MM = -50.0
DEFAULT_PIXEL_MODEL = Path(__file__).resolve().parent / "models" / "pixels.json"


class PixelGrid:
    """Shape and pixel size of a grid of ``grid_mm`` (or the film's spacing when coarser) for
    a film of ``shape`` and ``spacing_mm``."""

    def __init__(self, shape: tuple[int, int], spacing_mm: float, grid_mm: float = GRID_MM) -> None:
        self.grid_mm = max(grid_mm, spacing_mm)
        f = self.grid_mm / spacing_mm
        self.shape = (max(8, int(round(shape[0] / f))), max(8, int(round(shape[1] / f))))

    def resize(self, a: np.ndarray, interp: int = cv2.INTER_AREA) -> np.ndarray:
        """``a`` (any grid) brought to this grid as float32."""
        return cv2.resize(np.asarray(a, np.float32), (self.shape[1], self.shape[0]),
                          interpolation=interp)

    def resize_mask(self, mask: np.ndarray, band: int = 256) -> np.ndarray:
        """bool: where more than half of each cell of this grid is ``mask`` (any grid).

        The mask is averaged along its rows first, ``band`` rows at a time, then down its
        columns: as ``resize(mask) > 0.5`` without a float copy of the whole mask."""
        rows = np.empty((mask.shape[0], self.shape[1]), np.float32)
        for r in range(0, mask.shape[0], band):
            rows[r:r + band] = cv2.resize(mask[r:r + band].astype(np.float32),
                                          (self.shape[1], min(band, mask.shape[0] - r)),
                                          interpolation=cv2.INTER_AREA)
        return cv2.resize(rows, (self.shape[1], self.shape[0]), interpolation=cv2.INTER_AREA) > 0.5


def _line_means(img: np.ndarray, length_px: float) -> np.ndarray:
    """Largest mean of ``img`` along a straight line of ``length_px`` centred on each pixel,
    over ~pi * length / 4 orientations (the line's end moves by ~2 pixels between them)."""
    k = max(3, int(length_px) | 1)
    c = k // 2
    best = np.full(img.shape, -np.inf, np.float32)
    n = max(8, int(math.pi * length_px / 4))
    for i in range(n):
        a = math.pi * i / n
        dr, dc = math.sin(a) * c, math.cos(a) * c
        ker = np.zeros((k, k), np.float32)
        cv2.line(ker, (int(round(c - dc)), int(round(c - dr))), (int(round(c + dc)), int(round(c + dr))), 1.0, 1)
        ker /= ker.sum()
        np.maximum(best, cv2.filter2D(img, -1, ker, borderType=cv2.BORDER_REFLECT), out=best)
    return best


def pixel_features(flattened: np.ndarray, sigma_c: np.ndarray, body: np.ndarray,
                   bone: np.ndarray, background: np.ndarray, noise_sigma: float,
                   spacing_mm: float) -> tuple[np.ndarray, np.ndarray, PixelGrid]:
    """The pixel model's features on its grid.

    Parameters
    ----------
    flattened, background
        The film flattened and its background (film units), full size.
    sigma_c
        Local noise sigma of ``flattened`` on any grid (resized here).
    body, bone
        bool, full size: where the film is examined, and bone.
    noise_sigma
        The film's median local sigma.
    spacing_mm
        Pixel size of the film.

    Returns
    -------
    features
        float32 (rows, cols, len(PIXEL_FEATURES)) on the grid the model rates (computed on
        ``GRID_MM`` and averaged to ``RATE_GRID_MM``).
    examined
        bool (rows, cols): cells holding a body pixel whose ``z0.5`` reaches :data:`MIN_Z`
        (the only cells the model is asked about).
    grid
        The grid the model rates.

    See Also
    --------
    examined_pixel_features : the rows of the examined cells only (what the model rates).
    """
    x, examined, grid = _features(flattened, sigma_c, body, bone, background, noise_sigma,
                                  spacing_mm, examined_only=False)
    return x.reshape(grid.shape + (len(PIXEL_FEATURES),)), examined, grid


def examined_pixel_features(flattened: np.ndarray, sigma_c: np.ndarray, body: np.ndarray,
                            bone: np.ndarray, background: np.ndarray, noise_sigma: float,
                            spacing_mm: float) -> tuple[np.ndarray, np.ndarray, PixelGrid]:
    """:func:`pixel_features` of the examined cells only: float32 (n, len(PIXEL_FEATURES)),
    one row per ``True`` of ``examined`` in raster order, the same values. A film's
    examined cells are a small part of it: this is what segmentation rates (peak memory)."""
    return _features(flattened, sigma_c, body, bone, background, noise_sigma, spacing_mm,
                     examined_only=True)


def _features(flattened: np.ndarray, sigma_c: np.ndarray, body: np.ndarray, bone: np.ndarray,
              background: np.ndarray, noise_sigma: float, spacing_mm: float, *,
              examined_only: bool) -> tuple[np.ndarray, np.ndarray, PixelGrid]:
    """Feature rows of every cell of the rated grid (raster order) or of its examined cells."""
    g = PixelGrid(flattened.shape, spacing_mm)
    rate = PixelGrid(flattened.shape, spacing_mm, RATE_GRID_MM)
    mm = g.grid_mm
    # The cells examined come first: only their rows are kept when asked.
    sig = np.maximum(g.resize(sigma_c, cv2.INTER_LINEAR), 1e-6)
    body_g = g.resize_mask(body)
    z = np.where(body_g, g.resize(flattened) / sig, 0.0).astype(np.float32)
    z05 = cv2.GaussianBlur(z, (0, 0), 0.5 / mm)
    examined = body_g & (z05 >= MIN_Z)
    if rate.shape != g.shape:
        examined = rate.resize(examined) > 0
    keep = examined.ravel() if examined_only else slice(None)
    # Each feature goes to the rated grid as soon as it is made (a 2 x 2 mean when the grids
    # differ): a full stack on ``g`` would be 24 maps of a quarter of the film's pixels.
    out = np.empty((int(np.count_nonzero(examined)) if examined_only else examined.size,
                    len(PIXEL_FEATURES)), np.float32)
    column = {name: i for i, name in enumerate(PIXEL_FEATURES)}

    def put(name: str, a: np.ndarray) -> None:
        out[:, column[name]] = (a if rate.shape == g.shape else rate.resize(a)).ravel()[keep]

    # The order keeps few maps alive at once.
    put("sig_rel", sig / max(noise_sigma, 1e-6))
    bone_g = g.resize_mask(bone)
    if bone_g.any():
        bu = bone_g.astype(np.uint8)
        inside = cv2.distanceTransform(bu, cv2.DIST_L2, 5) * mm
        outside = cv2.distanceTransform(1 - bu, cv2.DIST_L2, 5) * mm
        put("bone_sd", np.clip(np.where(bone_g, inside, -outside), -30.0, 30.0))
        del bu, inside, outside
    else:
        put("bone_sd", np.full(g.shape, NO_BONE_SD_MM, np.float32))
    del bone_g
    skin = cv2.distanceTransform(np.pad(body_g.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    put("skin", np.minimum(skin * mm, 40.0))
    del skin, body_g
    put("z0", z)
    put("z8", cv2.GaussianBlur(z, (0, 0), 8.0 / mm))
    for s in (0.5, 1.0, 2.0, 4.0):
        gs, s_px = (z05 if s == 0.5 else cv2.GaussianBlur(z, (0, 0), s / mm)), s / mm
        put(f"z{s:g}", gs)
        # Hessian eigenvalues, computed in place (five maps of the grid at most).
        dxx = cv2.Sobel(gs, cv2.CV_32F, 2, 0, ksize=3)
        dxx /= 4.0
        dyy = cv2.Sobel(gs, cv2.CV_32F, 0, 2, ksize=3)
        dyy /= 4.0
        dxy = cv2.Sobel(gs, cv2.CV_32F, 1, 1, ksize=3)
        dxy /= 4.0
        half_tr = dxx + dyy
        half_tr /= 2.0
        dxx -= dyy  # (dxx - dyy) / 2 from here on
        del dyy
        dxx /= 2.0
        dxx **= 2
        dxy **= 2
        dxx += dxy
        del dxy
        root = np.sqrt(dxx, out=dxx)
        put(f"l1_{s:g}", (half_tr - root) * s_px**2)
        half_tr += root
        half_tr *= s_px**2
        put(f"l2_{s:g}", half_tr)
        del root, half_tr
        if s == 1.0:
            d3 = int(6.0 / mm) | 1
            put("zmax3", cv2.dilate(gs, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d3, d3))))
    del z, gs
    # Line means on a coarser grid (smooth at that scale anyway), brought back.
    line = PixelGrid(g.shape, mm, LINE_GRID_MM)
    z_line = line.resize(z05)
    del z05
    for length in (8, 30):
        put(f"line{length}", g.resize(_line_means(z_line, length / line.grid_mm), cv2.INTER_LINEAR))
    bg = g.resize(background)
    for s in (1.0, 3.0):
        gb = cv2.GaussianBlur(bg, (0, 0), s / mm)
        grad = np.hypot(cv2.Sobel(gb, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(gb, cv2.CV_32F, 0, 1, ksize=3))
        put(f"bggrad{s:g}", grad / 8.0 / sig)
        put(f"bglap{s:g}", cv2.Laplacian(gb, cv2.CV_32F) * (s / mm) ** 2 / sig)
    return out, examined, rate if rate.shape != g.shape else g


@functools.lru_cache(maxsize=4)
def load_pixel_model(path: str | Path | None = None) -> TreeModel:
    """Read a pixel model (JSON); ``None`` is the model shipped with calcimage."""
    return load_tree_model(DEFAULT_PIXEL_MODEL if path is None else Path(path), PIXEL_FEATURES,
                           "pixel model", "benchmarks/train_pixels.py")


def pixel_model_digest(path: str | Path | None = None) -> str:
    """First 16 hex digits of the SHA-256 of a pixel model file (``None``: the shipped one)."""
    return model_digest(DEFAULT_PIXEL_MODEL if path is None else path)


def pixel_probability(model: TreeModel, features: np.ndarray, examined: np.ndarray) -> np.ndarray:
    """float32 map (grid) of the probability that each examined pixel is on a lesion; 0
    elsewhere. ``features`` are the maps of :func:`pixel_features` or the rows of
    :func:`examined_pixel_features`."""
    prob = np.zeros(examined.shape, np.float32)
    if examined.any():
        prob[examined] = predict_proba(model, features if features.ndim == 2 else features[examined])
    return prob
