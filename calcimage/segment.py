"""Segmentation of calcified nodules and plaques: ``segment(film, params) -> Segmentation``.

Outline (every size in mm, converted with the film's spacing; see docs/method.md):

1. **Working grid.** Large-scale steps run on a copy reduced by area averaging to about
   ``work_spacing_mm`` per pixel; only the final threshold and labelling run at full size.
2. **Exclusions.** Air (direct exposure) is found by Otsu on the reduced film when it forms a
   clearly separate dark mode; collimation borders are large flat bright areas touching the
   film edge; lead markers and burned-in text are small near-saturated plateaus. The body is
   what is left.
3. **Background.** A grey opening with a disc of ``background_mm`` removes everything
   narrower than the disc (the lesions) and keeps soft tissue and bone. Inside bone (found as
   large bright structures at a coarser scale) the background is raised by an opening with a
   line along the local bone direction so cortical edges, which are long thin ridges parallel
   to the bone, stay in the background.
4. **Flattened film** = film (lightly smoothed, ``smooth_mm``) − background, in film units.
5. **Threshold.** ``auto``: ``k_sigma`` × the local robust noise of the flattened film (MAD
   based, ``noise_mm`` neighbourhoods), raised by ``bone_factor`` over bone; or one global
   Otsu / Yen / Li / triangle / fixed threshold. Faint edges grow by hysteresis down to
   ``low_ratio`` × the threshold.
6. **Label** (8-connectivity), drop components under ``min_area_mm2`` and elongated thin
   components lying along bone edges (cortex); classify the rest as nodule or plaque by shape.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage import filters, measure as skmeasure

from calcimage.film import Film
from calcimage.params import require, require_positive, require_range

__all__ = ["LesionKind", "ThresholdMethod", "SegmentParams", "Segmentation", "segment"]

logger = logging.getLogger(__name__)


class LesionKind(str, enum.Enum):
    """Shape class of a lesion."""

    NODULE = "nodule"
    PLAQUE = "plaque"


class ThresholdMethod(str, enum.Enum):
    """How the lesion threshold is chosen on the background-flattened film."""

    AUTO = "auto"  # noise-scaled: k × robust noise sigma of the flattened film
    OTSU = "otsu"
    YEN = "yen"
    LI = "li"
    TRIANGLE = "triangle"
    FIXED = "fixed"


@dataclass(frozen=True)
class SegmentParams:
    """Every knob of :func:`segment`. Sizes and scales are in mm.

    Attributes
    ----------
    method
        Threshold rule on the flattened film (see :class:`ThresholdMethod`).
    k_sigma
        ``auto``: lesion seeds are at least ``k_sigma`` local noise sigmas above background.
    low_ratio
        Hysteresis: seeds grow through pixels above ``low_ratio`` × the threshold.
    fixed_threshold
        ``fixed``: threshold in film units over the local background (required then).
    min_area_mm2
        Components smaller than this are dropped (Agatston's 1 mm²).
    smooth_mm
        Gaussian sigma applied before thresholding (noise equalisation across spacings).
    background_mm
        Diameter of the opening disc: lesions narrower than this are measured against the
        tissue around them. Must exceed the widest lesion (nodules up to ~12 mm).
    work_spacing_mm
        Pixel size of the reduced copy used for background, body and bone steps.
    noise_mm
        Neighbourhood over which the local noise sigma is estimated.
    bone_scale_mm
        Diameter of the coarse opening that removes bone; structures between
        ``background_mm`` and this width that stand out are candidate bone.
    bone_min_relative
        Bone: background excess over the soft-tissue baseline, relative to the soft-tissue
        level above air, must exceed this.
    bone_line_mm
        Length of the line opening along the local bone direction (cortex suppression).
    bone_margin_mm
        Bone mask dilation before it is used (cortex halo).
    bone_factor
        ``auto`` threshold multiplier over bone (texture and cortex make it less reliable).
    marker_min_area_mm2
        Near-saturated plateaus at least this big are markers/text, not lesions.
    marker_saturation
        A pixel is near-saturated above ``lo + marker_saturation × (max − lo)``.
    marker_margin_mm
        Marker/text masks are dilated by this (blur halo).
    collimation_min_area_mm2
        Flat bright areas touching the film edge and at least this big are collimation.
    assumed_spacing_mm
        Scale used for films without spacing (sizes only; outputs still say "no spacing").
    ridge_max_width_mm, ridge_min_elongation
        A component over bone whose minor axis is under ``ridge_max_width_mm`` and whose
        elongation exceeds ``ridge_min_elongation`` along the bone direction is cortex.
    edge_fraction, edge_mm
        Lesion edges are cut at ``edge_fraction`` × the highest flattened value within
        ``edge_mm`` (half maximum by default), never below the hysteresis low threshold, so
        blur does not inflate dense lesions.
    plaque_min_elongation, plaque_min_length_mm, plaque_max_solidity, plaque_min_area_mm2
        Plaque when (elongation ≥ and major axis ≥ the first two) or (area ≥ the last and
        solidity ≤ the third); otherwise nodule.
    """

    method: ThresholdMethod = ThresholdMethod.AUTO
    min_area_mm2: float = 1.0
    k_sigma: float = 4.0
    low_ratio: float = 0.5
    fixed_threshold: float | None = None
    smooth_mm: float = 0.15
    background_mm: float = 16.0
    work_spacing_mm: float = 0.5
    noise_mm: float = 12.0
    bone_scale_mm: float = 48.0
    bone_min_relative: float = 0.15
    bone_line_mm: float = 24.0
    bone_margin_mm: float = 2.0
    bone_factor: float = 1.5
    marker_min_area_mm2: float = 4.0
    marker_saturation: float = 0.97
    marker_margin_mm: float = 1.5
    collimation_min_area_mm2: float = 400.0
    assumed_spacing_mm: float = 0.2
    ridge_max_width_mm: float = 3.0
    ridge_min_elongation: float = 4.0
    plaque_min_elongation: float = 2.5
    plaque_min_length_mm: float = 8.0
    plaque_max_solidity: float = 0.7
    plaque_min_area_mm2: float = 30.0
    edge_fraction: float = 0.5
    edge_mm: float = 3.0

    def __post_init__(self) -> None:
        require(isinstance(self.method, ThresholdMethod), "method", self.method,
                "one of " + ", ".join(m.value for m in ThresholdMethod))
        for name in ("min_area_mm2", "smooth_mm", "bone_margin_mm", "marker_margin_mm"):
            require_positive(name, getattr(self, name), allow_zero=True)
        for name in ("k_sigma", "background_mm", "work_spacing_mm", "noise_mm", "bone_scale_mm",
                     "bone_line_mm", "bone_factor", "marker_min_area_mm2",
                     "collimation_min_area_mm2", "assumed_spacing_mm", "ridge_max_width_mm",
                     "ridge_min_elongation", "plaque_min_elongation", "plaque_min_length_mm",
                     "plaque_min_area_mm2", "bone_min_relative"):
            require_positive(name, getattr(self, name))
        require_range("low_ratio", self.low_ratio, 0.05, 1.0)
        require_range("edge_fraction", self.edge_fraction, 0.0, 0.95)
        require_positive("edge_mm", self.edge_mm)
        require_range("marker_saturation", self.marker_saturation, 0.5, 1.0)
        require_range("plaque_max_solidity", self.plaque_max_solidity, 0.0, 1.0)
        require(self.bone_scale_mm > self.background_mm, "bone_scale_mm", self.bone_scale_mm,
                f"a value larger than background_mm={self.background_mm}")
        if self.method is ThresholdMethod.FIXED:
            require(self.fixed_threshold is not None, "fixed_threshold", self.fixed_threshold,
                    "a number (film units over background) when method = 'fixed'")
        if self.fixed_threshold is not None:
            require_positive("fixed_threshold", self.fixed_threshold)


@dataclass(frozen=True, eq=False)
class Segmentation:
    """Result of :func:`segment`.

    Attributes
    ----------
    labels
        int32 (rows, cols); 0 = background, k = lesion k (1..n, in raster order of first pixel).
    kinds
        ``kinds[k - 1]`` is the class of label k.
    threshold, threshold_low
        High and low (hysteresis) thresholds actually used, in units of ``flattened``. For
        ``auto`` (a local, noise-scaled threshold) these are the values at the median noise
        level of the body; ``noise_sigma`` and ``threshold_k`` give the rule.
    flattened
        float32 background-flattened film the thresholds apply to (contrast over local tissue).
    excluded
        Named boolean masks of what was kept out: ``outside_body``, ``collimation``,
        ``marker``, ``bone`` (bone is not excluded outright: a stricter threshold applies).
    params
        The parameters used.
    background
        float32 local background (soft tissue, and bone where present) in film units.
    air_level
        Film value of direct exposure (no tissue), used to express contrast relative to the
        soft tissue; the film's low percentile when no air is visible.
    noise_sigma
        Median local robust noise sigma of ``flattened`` inside the body.
    threshold_k
        ``auto``: seeds need ``flattened >= threshold_k × local sigma``; None otherwise.
    scale_spacing_mm
        Spacing the mm scales were converted with (the film's, or ``assumed_spacing_mm``).
    rejected_ridges
        Number of components dropped as cortical ridges.
    """

    labels: np.ndarray
    kinds: tuple[LesionKind, ...]
    threshold: float
    threshold_low: float
    flattened: np.ndarray
    excluded: Mapping[str, np.ndarray] = field(default_factory=dict)
    params: SegmentParams = field(default_factory=SegmentParams)
    background: np.ndarray | None = None
    air_level: float = 0.0
    noise_sigma: float = 0.0
    threshold_k: float | None = None
    scale_spacing_mm: float = 0.0
    rejected_ridges: int = 0

    @property
    def n_lesions(self) -> int:
        """Number of labelled lesions."""
        return len(self.kinds)

    @property
    def mask(self) -> np.ndarray:
        """bool (rows, cols): any lesion."""
        return self.labels > 0


# --------------------------------------------------------------------------------------
# small helpers (public for tests, not exported)


def disc(diameter_px: float) -> np.ndarray:
    """Disc structuring element of odd size ≥ 1 px."""
    d = max(1, int(round(diameter_px)))
    d += 1 - d % 2
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d))


def line_kernel(length_px: float, angle_rad: float) -> np.ndarray:
    """uint8 line structuring element of ``length_px`` at ``angle_rad`` (0 = along rows' axis
    i.e. horizontal, measured towards increasing row)."""
    n = max(1, int(round(length_px)))
    n += 1 - n % 2
    k = np.zeros((n, n), np.uint8)
    h = (n - 1) / 2
    dr, dc = math.sin(angle_rad) * h, math.cos(angle_rad) * h
    cv2.line(k, (int(round(h - dc)), int(round(h - dr))), (int(round(h + dc)), int(round(h + dr))),
             1, 1)
    return k


def robust_sigma(values: np.ndarray) -> float:
    """1.4826 × median absolute deviation from the median (0 for empty input)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return 0.0
    med = np.median(v)
    return float(1.4826 * np.median(np.abs(v - med)))


def _resize(img: np.ndarray, shape: tuple[int, int], interp: int) -> np.ndarray:
    if img.shape == shape:
        return img
    return cv2.resize(img, (shape[1], shape[0]), interpolation=interp)


def _mask_resize(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return _resize(mask.astype(np.uint8), shape, cv2.INTER_NEAREST).astype(bool)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    return ndi.binary_fill_holes(mask)


def find_air(coarse: np.ndarray) -> tuple[np.ndarray, float]:
    """Air (direct exposure) on the reduced film and its level.

    Air is the dark Otsu class when it forms a separate mode (class means at least four
    pooled standard deviations apart and at least 1 % of the film). Returns (mask, level);
    without air the mask is empty and the level is the film's 0.5th percentile.
    """
    v = coarse[::2, ::2].ravel() if coarse.size > 40000 else coarse.ravel()
    lo = float(np.percentile(v, 0.5))
    if float(v.max()) - float(v.min()) <= 0:
        return np.zeros(coarse.shape, bool), lo
    t = float(filters.threshold_otsu(v))
    dark, light = v[v <= t], v[v > t]
    if dark.size < 0.01 * v.size or light.size == 0:
        return np.zeros(coarse.shape, bool), lo
    pooled = math.sqrt(0.5 * (dark.var() + light.var())) + 1e-12
    if (light.mean() - dark.mean()) / pooled < 4.0:
        return np.zeros(coarse.shape, bool), lo
    # The air level is the dark class's median; air = dark pixels connected to that mode.
    air = coarse <= t
    return air, float(np.median(dark))


def _orientation_field(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """Local direction (radians) along which ``img`` varies least (structure tensor)."""
    gr = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)
    gc = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3)
    jrr = cv2.GaussianBlur(gr * gr, (0, 0), sigma_px)
    jcc = cv2.GaussianBlur(gc * gc, (0, 0), sigma_px)
    jrc = cv2.GaussianBlur(gr * gc, (0, 0), sigma_px)
    # Angle of the dominant gradient, measured from the column axis towards rows.
    grad_angle = 0.5 * np.arctan2(2 * jrc, jcc - jrr)
    return (grad_angle + np.pi / 2) % np.pi


def _global_threshold(method: ThresholdMethod, values: np.ndarray) -> float:
    fn = {
        ThresholdMethod.OTSU: filters.threshold_otsu,
        ThresholdMethod.YEN: filters.threshold_yen,
        ThresholdMethod.LI: filters.threshold_li,
        ThresholdMethod.TRIANGLE: filters.threshold_triangle,
    }[method]
    if values.size == 0 or float(values.max()) <= float(values.min()):
        return float("inf")
    return float(fn(values))


def classify(area_mm2: float, major_mm: float, minor_mm: float, solidity: float,
             params: SegmentParams) -> LesionKind:
    """Nodule or plaque from shape (see :class:`SegmentParams`)."""
    elongation = major_mm / max(minor_mm, 1e-9)
    if elongation >= params.plaque_min_elongation and major_mm >= params.plaque_min_length_mm:
        return LesionKind.PLAQUE
    if area_mm2 >= params.plaque_min_area_mm2 and solidity <= params.plaque_max_solidity:
        return LesionKind.PLAQUE
    return LesionKind.NODULE


def axes_mm(coords: np.ndarray, spacing: tuple[float, float]) -> tuple[float, float, float]:
    """(major, minor, orientation) of a pixel set with anisotropic spacing.

    Axis lengths follow skimage's convention (4 × sqrt of the eigenvalues of the covariance of
    pixel positions in mm, pixel extent included); orientation is the major axis angle in the
    (row, col) mm plane, radians from the column axis towards increasing row.
    """
    pts = coords.astype(np.float64) * np.asarray(spacing, dtype=np.float64)
    if len(pts) < 2:
        cov = np.zeros((2, 2))
    else:
        cov = np.cov(pts, rowvar=False, bias=True)
    # A single pixel has the second moment of a uniform square: s²/12 per axis.
    cov = cov + np.diag(np.asarray(spacing, dtype=np.float64) ** 2 / 12.0)
    evals, evecs = np.linalg.eigh(cov)
    minor, major = 4 * math.sqrt(max(evals[0], 0.0)), 4 * math.sqrt(max(evals[1], 0.0))
    vr, vc = evecs[0, 1], evecs[1, 1]
    return major, minor, math.atan2(vr, vc) % math.pi


# --------------------------------------------------------------------------------------


def segment(film: Film, params: SegmentParams = SegmentParams()) -> Segmentation:
    """Find calcified lesions on a film.

    Parameters
    ----------
    film
        The film (brighter = denser).
    params
        Segmentation parameters; every size is in mm. Films without spacing are processed
        with ``params.assumed_spacing_mm`` as scale (and say so in the log).

    Returns
    -------
    Segmentation
        Labels (raster order), lesion kinds, thresholds used, flattened film, background,
        and the masks of what was excluded.
    """
    px = film.pixels
    rows, cols = film.shape
    spacing = film.mean_spacing_mm
    if spacing is None:
        spacing = params.assumed_spacing_mm
        logger.info("film %s has no pixel spacing: scales assume %.3g mm per pixel",
                    film.name, spacing)
    pixel_area = spacing * spacing
    if film.spacing_mm is not None:
        pixel_area = film.spacing_mm[0] * film.spacing_mm[1]

    # 1. working grid ------------------------------------------------------------------
    factor = max(1.0, params.work_spacing_mm / spacing)
    wshape = (max(8, int(round(rows / factor))), max(8, int(round(cols / factor))))
    wshape = (min(wshape[0], rows), min(wshape[1], cols))
    ws = spacing * math.sqrt((rows / wshape[0]) * (cols / wshape[1]))  # working mm/px
    coarse = _resize(px, wshape, cv2.INTER_AREA)

    # 2. exclusions ----------------------------------------------------------------------
    air_c, air_level = find_air(coarse)
    vmax = float(px.max())
    vlo = float(np.percentile(coarse, 0.5))
    sat_level = vlo + params.marker_saturation * (vmax - vlo)
    sat = px >= sat_level
    marker = np.zeros(px.shape, bool)
    collimation = np.zeros(px.shape, bool)
    if sat.any() and vmax > vlo:
        lab_s, n_s = ndi.label(sat)
        sizes = np.bincount(lab_s.ravel(), minlength=n_s + 1)
        sizes[0] = 0
        big = sizes * pixel_area >= params.marker_min_area_mm2
        coll_big = sizes * pixel_area >= params.collimation_min_area_mm2
        border = np.unique(np.concatenate([lab_s[0], lab_s[-1], lab_s[:, 0], lab_s[:, -1]]))
        on_border = np.zeros(n_s + 1, bool)
        on_border[border] = True
        on_border[0] = False
        is_coll = coll_big & on_border
        is_marker = big & ~is_coll
        collimation = is_coll[lab_s]
        marker = is_marker[lab_s]
        if marker.any():
            marker = cv2.dilate(marker.astype(np.uint8),
                                disc(2 * params.marker_margin_mm / spacing + 1)).astype(bool)
    # Flat bright border bands that are not saturated (scatter under the collimator).
    coll_c = _mask_resize(collimation, wshape)
    outside_c = air_c | coll_c
    body_c = _fill_holes(~outside_c)
    # Keep body components of a meaningful size (drops stray text and dust).
    lab_b, n_b = ndi.label(body_c)
    if n_b > 1:
        sizes = np.bincount(lab_b.ravel())
        sizes[0] = 0
        keep = sizes >= max(0.05 * sizes.max(), 100.0 / (ws * ws))
        keep[0] = False
        body_c = keep[lab_b]
    if not body_c.any():
        body_c = np.ones(wshape, bool)

    # 3. background -------------------------------------------------------------------------
    # Outside the body the film is replaced by the nearest body level so openings do not
    # eat into the skin line from the air side.
    work = coarse.copy()
    if (~body_c).any():
        work[~body_c] = float(np.median(coarse[body_c]))
        work[air_c] = air_level
    bg_c = cv2.morphologyEx(work, cv2.MORPH_OPEN, disc(params.background_mm / ws))
    soft_c = cv2.morphologyEx(work, cv2.MORPH_OPEN, disc(params.bone_scale_mm / ws))
    soft_c = cv2.GaussianBlur(soft_c, (0, 0), params.background_mm / ws / 2)
    tissue_c = np.maximum(soft_c - air_level, 1e-6)
    bone_c = ((bg_c - soft_c) / tissue_c > params.bone_min_relative) & body_c
    bone_c = ndi.binary_opening(bone_c, iterations=1)
    if bone_c.any():
        # Cortex: raise the background inside bone with a line opening along the bone.
        angle = _orientation_field(cv2.GaussianBlur(bg_c, (0, 0), 2.0 / ws),
                                   params.background_mm / ws / 2)
        n_dir = 12
        bins = np.round(angle / (np.pi / n_dir)).astype(int) % n_dir
        line_bg = np.zeros_like(bg_c)
        bone_band = cv2.dilate(bone_c.astype(np.uint8),
                               disc(2 * params.bone_margin_mm / ws + 1)).astype(bool)
        for i in range(n_dir):
            sel = (bins == i) | (bins == (i + 1) % n_dir) | (bins == (i - 1) % n_dir)
            sel &= bone_band
            if not sel.any():
                continue
            op = cv2.morphologyEx(work, cv2.MORPH_OPEN, line_kernel(params.bone_line_mm / ws,
                                                                     i * np.pi / n_dir))
            line_bg = np.where(sel, np.maximum(line_bg, op), line_bg)
        bg_c = np.maximum(bg_c, line_bg)
    # Smooth the staircase of the opening (half a background radius).
    bg_c = cv2.GaussianBlur(bg_c, (0, 0), max(0.5, 1.0 / ws))

    # 4. flattened film ------------------------------------------------------------------
    sm = px
    if params.smooth_mm > 0 and params.smooth_mm / spacing >= 0.3:
        sm = cv2.GaussianBlur(px, (0, 0), params.smooth_mm / spacing)
    background = _resize(bg_c, (rows, cols), cv2.INTER_LINEAR)
    flat = (sm - background).astype(np.float32)
    body = _mask_resize(body_c, (rows, cols)) & ~marker & ~collimation
    bone = _mask_resize(bone_c, (rows, cols)) & body

    # Bias of the opening (it sits under the noise and under convex tissue): remove the local
    # median level of the flattened film, estimated on the working grid.
    flat_c = _resize(flat, wshape, cv2.INTER_AREA)
    step = max(1, int(math.sqrt(flat.size / 2e5)))
    fb = flat[::step, ::step][body[::step, ::step]]
    sigma_g = robust_sigma(fb) if fb.size else 1.0
    sigma_g = sigma_g if sigma_g > 0 else 1e-6
    clipped = np.clip(flat_c, -3 * sigma_g, 3 * sigma_g)
    w = body_c.astype(np.float32)
    ksig = params.noise_mm / ws / 2
    num = cv2.GaussianBlur(clipped * w, (0, 0), ksig)
    den = cv2.GaussianBlur(w, (0, 0), ksig)
    bias_c = np.where(den > 1e-3, num / np.maximum(den, 1e-3), 0.0).astype(np.float32)
    bias = _resize(bias_c, (rows, cols), cv2.INTER_LINEAR)
    flat -= bias
    background = background + bias

    # 5. local noise sigma: mean |flat| (clipped) on the working grid, / sqrt(2/pi).
    fb = flat[::step, ::step][body[::step, ::step]]
    sigma_g = robust_sigma(fb) if fb.size else 1.0
    sigma_g = sigma_g if sigma_g > 0 else 1e-6
    absf = _resize(np.minimum(np.abs(flat), 3 * sigma_g), wshape, cv2.INTER_AREA)
    num = cv2.GaussianBlur(absf * w, (0, 0), ksig)
    sig_c = np.where(den > 1e-3, num / np.maximum(den, 1e-3), sigma_g) / 0.7979
    sig_c = np.maximum(sig_c, 0.25 * sigma_g).astype(np.float32)
    noise_sigma = float(np.median(sig_c[body_c])) if body_c.any() else sigma_g

    # 6. threshold + hysteresis ---------------------------------------------------------
    threshold_k: float | None = None
    if params.method is ThresholdMethod.AUTO:
        threshold_k = params.k_sigma
        factor_c = np.where(cv2.dilate(bone_c.astype(np.uint8), disc(
            2 * params.bone_margin_mm / ws + 1)).astype(bool), params.bone_factor, 1.0)
        thr_map = _resize((sig_c * factor_c * params.k_sigma).astype(np.float32), (rows, cols),
                          cv2.INTER_LINEAR)
        high = flat >= thr_map
        low = flat >= thr_map * params.low_ratio
        threshold = params.k_sigma * noise_sigma
    else:
        if params.method is ThresholdMethod.FIXED:
            assert params.fixed_threshold is not None
            threshold = float(params.fixed_threshold)
        else:
            threshold = _global_threshold(params.method, flat[::step, ::step][body[::step, ::step]])
        high = flat >= threshold
        low = flat >= threshold * params.low_ratio
    threshold_low = threshold * params.low_ratio
    high &= body
    low &= body
    grown = _hysteresis(low, high)
    grown = _trim_edges(grown, flat, params.edge_fraction, params.edge_mm / spacing)

    # 7. label, size filter, cortex ridges, classes ---------------------------------------
    labels, kinds, rejected = _label_and_classify(grown, bone, film, spacing, params, bg_c, ws)
    outside = ~_mask_resize(body_c, (rows, cols))
    excluded = {
        "outside_body": outside,
        "collimation": collimation,
        "marker": marker,
        "bone": bone,
    }
    logger.debug("segment %s: %d lesions, threshold %.4g (low %.4g), sigma %.4g",
                 film.name, len(kinds), threshold, threshold_low, noise_sigma)
    return Segmentation(
        labels=labels, kinds=kinds, threshold=float(threshold),
        threshold_low=float(threshold_low), flattened=flat, excluded=excluded, params=params,
        background=background.astype(np.float32), air_level=float(air_level),
        noise_sigma=noise_sigma, threshold_k=threshold_k, scale_spacing_mm=float(spacing),
        rejected_ridges=rejected,
    )


def _hysteresis(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Components of ``low`` that contain a ``high`` pixel (8-connectivity)."""
    n, lab = cv2.connectedComponents(low.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    if n <= 1:
        return np.zeros(low.shape, bool)
    keep = np.zeros(n, bool)
    keep[np.unique(lab[high & low])] = True
    keep[0] = False
    return keep[lab]


def _trim_edges(mask: np.ndarray, flat: np.ndarray, fraction: float,
                size_px: float) -> np.ndarray:
    """Keep pixels of ``mask`` at or above ``fraction`` × the local peak (within ``size_px``).

    Detector blur spreads a dense lesion far beyond its footprint; the low hysteresis threshold
    would follow that tail. Cutting at a fraction of the local peak (half maximum by default)
    puts the edge where the blurred step crosses half its height, for faint and dense lesions
    alike.
    """
    if fraction <= 0 or not mask.any():
        return mask
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    out = np.zeros_like(mask)
    k = max(3, int(round(size_px)) | 1)
    kernel = np.ones((k, k), np.uint8)
    pad = k
    rows, cols = mask.shape
    for i in range(1, n):
        c0, r0, w, h = stats[i, :4]
        r0p, c0p = max(0, r0 - pad), max(0, c0 - pad)
        r1p, c1p = min(rows, r0 + h + pad), min(cols, c0 + w + pad)
        comp = lab[r0p:r1p, c0p:c1p] == i
        f = np.where(comp, flat[r0p:r1p, c0p:c1p], -np.inf).astype(np.float32)
        lmax = cv2.dilate(f, kernel)
        keep = comp & (f >= fraction * lmax)
        out[r0p:r1p, c0p:c1p] |= keep
    return out


def _label_and_classify(mask: np.ndarray, bone: np.ndarray, film: Film, spacing: float,
                        params: SegmentParams, bg_c: np.ndarray,
                        ws: float) -> tuple[np.ndarray, tuple[LesionKind, ...], int]:
    sp = film.spacing_mm if film.spacing_mm is not None else (spacing, spacing)
    pixel_area = sp[0] * sp[1]
    labels = skmeasure.label(mask, connectivity=2).astype(np.int32)
    if labels.max() == 0:
        return labels, (), 0
    areas = np.bincount(labels.ravel())
    min_px = params.min_area_mm2 / pixel_area
    keep = areas >= min_px
    keep[0] = False
    # Bone direction on the working grid, for the cortex-ridge test.
    angle_c = None
    if bone.any():
        angle_c = _orientation_field(cv2.GaussianBlur(bg_c, (0, 0), 2.0 / ws),
                                     params.background_mm / ws / 2)
    rows, cols = labels.shape
    kinds: list[LesionKind] = []
    rejected = 0
    new_ids = np.zeros(len(areas), np.int32)
    next_id = 1
    for rp in skmeasure.regionprops(labels):
        if not keep[rp.label]:
            continue
        coords = rp.coords
        major, minor, orient = axes_mm(coords, sp)
        area_mm2 = rp.area * pixel_area
        on_bone = bone[coords[:, 0], coords[:, 1]].mean()
        if angle_c is not None and on_bone > 0.5 and minor <= params.ridge_max_width_mm \
                and major / max(minor, 1e-9) >= params.ridge_min_elongation:
            r0, c0 = rp.centroid
            rc = min(int(r0 * bg_c.shape[0] / rows), bg_c.shape[0] - 1)
            cc = min(int(c0 * bg_c.shape[1] / cols), bg_c.shape[1] - 1)
            d = abs(orient - float(angle_c[rc, cc])) % math.pi
            if min(d, math.pi - d) < math.radians(20):
                rejected += 1
                continue
        new_ids[rp.label] = next_id
        next_id += 1
        kinds.append(classify(area_mm2, major, minor, rp.solidity, params))
    return new_ids[labels], tuple(kinds), rejected
