"""Registration of a follow-up film onto its baseline.

Method
------
Both films are resampled onto isotropic millimetre grids (a pyramid, coarse to fine, by
default 4, 2 and 1 mm per pixel), so films of different pixel spacing agree and the fitted
scale is the physical magnification. On each grid the image is replaced by its smoothed
gradient magnitude: edges (skin line, bone cortex, soft-tissue planes) survive exposure
changes, while the global exposure level and the heel-effect ramp do not matter.

The similarity transform is fitted by the enhanced correlation coefficient (ECC, Evangelidis
& Psarakis 2008) — a Gauss–Newton maximisation of the normalised correlation that is
invariant to gain and offset — computed over the baseline's mask and the warped follow-up's
mask. OpenCV's ``findTransformECC`` has no similarity model
and takes no template mask, so the few lines of the ECC update are written here over
OpenCV warps and gradients. Each Gauss-Newton step is shortened to move no point of the grid
by more than ``_MAX_STEP_PX`` pixels: from a start a few mm off along a limb the full step
could jump to scale 0.83 and lose the overlap (development pair 147 with the films swapped).

``transform = "affine"``: the converged similarity is refined on the finest level with shear
and anisotropic scale, and the affine is kept only when it fits clearly better
(``_affine_from``); otherwise the similarity is returned and recorded as such. Along a limb a
shear that slides each column along the axis leaves every skin line in place, so an affine
fitted down the whole pyramid drifted (development pair 119: 50 mm off, quality 0.82).

Large motion: the coarsest level is started from the identity and from the best few of a
global search — rotations every 2° up to ±12°, each with the translation found by phase
correlation (``cv2.phaseCorrelate``). Every start that converges somewhere else on that level
is refined down the pyramid, and the best on the finest level is kept: at 4 mm a fit 45 mm
off along a limb can correlate better than the right one (development pair 128 with the
films swapped). (Feature matching with ORB and RANSAC was tried first: the smooth gradients
of a limb film give too few repeatable corners for it.)

Masks: excluded areas (collimation, markers) are first grown by ``_EXCLUSION_MARGIN_MM``
(a mask drawn exactly on a collimator blade leaves its penumbra in the kept pixels), then
filled with their smoothed surroundings before gradients are taken, and the pixels next to
them are left out of the fit, so their edges pull on nothing. Collimated bands are also looked
for here (``_collimation``), deeper than the segmentation does, and excluded the same way: a
missed band's blade edge is long, straight and fixed to the film. Lesions are not masked: most
change little and anchor the fit (a limb without bone has little else along its length).

Robustness: on the finest level only, the ECC is iteratively reweighted (Tukey biweight on the
normalised residual), so a lesion that grew, shrank, appeared or resolved loses its say there —
as a whole (``_reject_changed_objects``): the bits of a grown lesion's rim that match after a
shift keep no weight, so they cannot pull a limb along its axis. The coarser levels are plain
least squares: blurred, a grown lesion still overlaps its former
self and its centre anchors the fit along a limb, whereas the biweight — its spread set by
the many flat pixels — dropped every changed lesion and left a tube of a limb free to slide
along its axis (development pair 106: 2.4 mm at the lesions).

Coordinates: internally (x = col, y = row) in mm, OpenCV's order; the returned
:class:`~calcimage.compare.Registration` holds (row, col) matrices. The mm position of pixel
index ``i`` is ``(i + 0.5) × spacing``, which ``cv2.resize`` preserves.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from calcimage.compare import CompareParams, Registration, TransformKind
from calcimage.errors import IncompatibleFilmsError, RegistrationError
from calcimage.film import Film
from calcimage.segment import SegmentParams, find_collimation

__all__ = ["register"]

logger = logging.getLogger(__name__)

#: Swaps (x, y, 1) and (row, col, 1) in homogeneous 3×3 matrices: M_rc = _SWAP @ M_xy @ _SWAP.
_SWAP = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
#: Coarse search of the start: rotations up to this many degrees either way, in these steps.
_SEARCH_ROTATION_DEG = 12.0
_SEARCH_STEP_DEG = 2.0
#: Scale of the local mean removed before the quality correlation, in mm.
_QUALITY_HIGHPASS_MM = 5.0
#: Values beyond this many robust standard deviations are clipped before the quality correlation.
_QUALITY_CLIP = 5.0
#: Tukey biweight constant, in robust standard deviations of the residual. Below the usual
#: 4.685 (95 % efficiency for Gaussian noise): the residual spread is set by the many flat
#: pixels, and the edges of changed lesions must lose their say. Development pairs 100-199:
#: worst error 0.61 -> 0.49 mm; rendered at 0.2 mm, 1.70 -> 0.92 mm (pair 142, boneless limb,
#: every lesion grown 2.2×).
_TUKEY_C = 3.5
#: A patch of connected rejected pixels (Tukey weight below a quarter) at least this large is a
#: changed object — a lesion that grew, shrank, appeared or resolved — not texture or noise
#: (those reject specks of a pixel or two), and the whole object loses its say: the patch is
#: grown by ``_CHANGED_GROW_MM`` and given weight 0. Per-pixel weights alone keep the parts of
#: a changed lesion's rim that happen to match after a shift; on a limb without bone those bits
#: are all that fix the position along the limb, and they pulled it there (development pair
#: 166, lesions grown 2.2×: 1.31 mm through the pipeline, 0.54 mm on true labels).
_CHANGED_MIN_AREA_MM2 = 20.0
#: Rejected patches are grown by this many mm: the rim of a changed lesion fades into its
#: partly matching surroundings over about the gradient images' smoothing support.
_CHANGED_GROW_MM = 2.0
#: Pixels of each pyramid level kept clear of excluded areas: the registration image is
#: smoothed, differentiated and smoothed again (about 3 pixels of support), so nearer pixels
#: still see the filled border, which is fixed to the film, not the anatomy.
_MASK_MARGIN_PX = 3
#: A coarse fit that keeps less than this fraction of its start's overlap slid along the limb
#: (see ``_fit``): its start is refined too. A tapered boneless limb is two converging skin
#: lines, mapped onto themselves by a scaling about their apex: at 4 mm every start of pair
#: 318 (and its true pose) slid 62 mm at scale 0.91, keeping 0.49-0.53 of the start's
#: overlap; the right fits of pairs 100-139 and 300-330 keep at least 0.81.
_SLID_OVERLAP_FRACTION = 0.75
#: Largest move of any point of the grid in one ECC iteration, in pixels of the level.
_MAX_STEP_PX = 2.0
#: The affine refinement is kept only when its robust ECC misfit (1 - correlation) is at most
#: this fraction of the similarity's (see ``_affine_from``): development pairs (similarity
#: truth) 0.97-1.0, a 3 % stretch mostly below 0.9.
_AFFINE_MIN_GAIN = 0.9
#: Largest shear or anisotropic stretch (relative to the scale) accepted from an affine fit:
#: a limb tilted 25° against the detector is foreshortened by 10 %.
_MAX_AFFINE_DEPARTURE = 0.10
#: Gradient magnitudes are compressed as m / (m + knee), knee = this × their median.
_EDGE_KNEE = 5.0
#: Excluded areas are grown by this many mm (on the finest grid) before anything else: a mask
#: drawn exactly on a collimator blade or marker leaves its penumbra and detector blur in the
#: kept pixels next to it, and the fill would carry that film-fixed edge into the fit.
_EXCLUSION_MARGIN_MM = 2.0
#: Collimated bands are looked for here too, as deep as this fraction of the film side: the
#: segmentation's search stops at ``collimation_max_depth_mm`` (100 mm), and a long narrow
#: field leaves wider bands, whose film-fixed blade edges then outweigh the anatomy.
_COLLIMATION_MAX_DEPTH_FRACTION = 0.45
#: A collimated band is a plateau: its robust spread (median absolute deviation) stays below
#: this fraction of the film's 1-99 % intensity range (phantom bands 0.005; a limb with bone
#: along a film side is far from flat).
_COLLIMATION_MAX_SPREAD = 0.03


@dataclass(frozen=True)
class _Level:
    """One film resampled for registration."""

    image: np.ndarray  # float32 smoothed gradient magnitude, compressed (edge presence)
    grad_x: np.ndarray  # d image / d x_mm
    grad_y: np.ndarray  # d image / d y_mm
    mask: np.ndarray  # bool, pixels usable for registration
    spacing_rc: tuple[float, float]  # mm per pixel (row, col) of this grid
    raw: np.ndarray  # float32 smoothed gradient magnitude, for the quality score

    @property
    def px_to_mm(self) -> np.ndarray:
        """3×3 (x, y) pixel index → mm."""
        sr, sc = self.spacing_rc
        return np.array([[sc, 0.0, 0.5 * sc], [0.0, sr, 0.5 * sr], [0.0, 0.0, 1.0]])


class _EccFailure(Exception):
    """ECC could not proceed (no overlap, uncorrelated images, implausible scale)."""


def _resample(pixels: np.ndarray, spacing_rc: tuple[float, float], target_mm: float,
              mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Area-average ``pixels`` to about ``target_mm`` per pixel (never upsampled)."""
    rows, cols = pixels.shape
    new_rows = max(8, min(rows, int(round(rows * spacing_rc[0] / target_mm))))
    new_cols = max(8, min(cols, int(round(cols * spacing_rc[1] / target_mm))))
    spacing = (rows * spacing_rc[0] / new_rows, cols * spacing_rc[1] / new_cols)
    if (new_rows, new_cols) == (rows, cols):
        image = np.asarray(pixels, dtype=np.float32)
        small_mask = np.ones((rows, cols), bool) if mask is None else np.asarray(mask, bool)
    else:
        image = cv2.resize(np.asarray(pixels, dtype=np.float32), (new_cols, new_rows),
                           interpolation=cv2.INTER_AREA)
        if mask is None:
            small_mask = np.ones((new_rows, new_cols), bool)
        else:
            small_mask = cv2.resize(np.asarray(mask, dtype=np.float32), (new_cols, new_rows),
                                    interpolation=cv2.INTER_AREA) > 0.5
    return image, small_mask, spacing


def _level(pixels: np.ndarray, spacing_rc: tuple[float, float], target_mm: float,
           mask: np.ndarray | None) -> _Level:
    image, small_mask, spacing = _resample(pixels, spacing_rc, target_mm, mask)
    # Robust intensity normalisation: gradients in units of the film's contrast range.
    lo, hi = np.percentile(image, [1.0, 99.0])
    image = ((image - lo) / max(float(hi - lo), 1e-6)).astype(np.float32)
    if mask is not None and not small_mask.all():
        # Fill excluded areas with the smoothed surroundings (normalised convolution) so their
        # edges (collimation, markers) do not put gradients into the kept area.
        keep = small_mask.astype(np.float32)
        num = cv2.GaussianBlur(image * keep, (0, 0), 4.0)
        den = cv2.GaussianBlur(keep, (0, 0), 4.0)
        fallback = float(image[small_mask].mean()) if small_mask.any() else 0.0
        fill = np.where(den > 1e-3, num / np.maximum(den, 1e-3), fallback).astype(np.float32)
        image = np.where(small_mask, image, fill).astype(np.float32)
    image = cv2.GaussianBlur(image, (0, 0), 1.0)
    gx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3, scale=1.0 / 8.0)
    gy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3, scale=1.0 / 8.0)
    # np.hypot, not cv2.magnitude: OpenCV 5's magnitude gave two different results for the
    # same input from run to run, which broke byte-identical outputs.
    raw = cv2.GaussianBlur(np.hypot(gx, gy), (0, 0), 1.0)
    # Edge presence, not edge strength: m / (m + knee) saturates (knee: a few times the
    # typical magnitude, so noise stays small). A lesion's contrast
    # differs between films (exposure, density change) and the skin line is far stronger than
    # anything else; raw magnitudes let those amplitudes, not positions, steer the fit. On a
    # limb with few structures across its axis this let the fit slide along it.
    # The quality score keeps the raw magnitude: its threshold was set on it.
    typical = float(np.median(raw[small_mask] if small_mask.any() else raw))
    knee = _EDGE_KNEE * typical + 1e-6
    magnitude = (raw / (raw + np.float32(knee))).astype(np.float32)
    # Gradients of the magnitude image, in units per mm, for the ECC Jacobian.
    mgx = cv2.Sobel(magnitude, cv2.CV_32F, 1, 0, ksize=3, scale=1.0 / 8.0) / np.float32(spacing[1])
    mgy = cv2.Sobel(magnitude, cv2.CV_32F, 0, 1, ksize=3, scale=1.0 / 8.0) / np.float32(spacing[0])
    if mask is not None:
        # Pixels near an excluded area still see its filled border: keep them clear.
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * _MASK_MARGIN_PX + 1,) * 2)
        small_mask = cv2.erode(small_mask.astype(np.uint8), disc,
                               borderType=cv2.BORDER_CONSTANT, borderValue=1) > 0
    return _Level(magnitude, mgx, mgy, small_mask, spacing, raw)


def _vdot(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of ``a * b`` over two long vectors, without BLAS.

    OpenBLAS spreads dot products and skinny matrix products over threads; with another
    worker or program on the cores each hand-off costs far more than the arithmetic (most of a
    compare's time on a busy 2-core machine, see docs/performance.md). ``einsum`` runs in
    this thread, and the result no longer depends on BLAS's thread count.
    """
    return float(np.einsum("i,i->", a, b))


def _norm(a: np.ndarray) -> float:
    """Euclidean norm of a vector (see :func:`_vdot`)."""
    return math.sqrt(_vdot(a, a))


def _gram(jac: np.ndarray) -> np.ndarray:
    """``jac.T @ jac`` for a tall (n, k) matrix (see :func:`_vdot`)."""
    return np.einsum("ij,ik->jk", jac, jac)


def _tdot(jac: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``jac.T @ v`` for a tall (n, k) matrix (see :func:`_vdot`)."""
    return np.einsum("ij,i->j", jac, v)


def _warp(image: np.ndarray, m_px: np.ndarray, shape: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Sample ``image`` at ``m_px @ (x, y, 1)`` for every pixel of a ``shape`` grid."""
    flags = (cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR) | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(image, np.ascontiguousarray(m_px[:2], dtype=np.float64), (shape[1], shape[0]),
                          flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _params_to_warp(p: np.ndarray, kind: TransformKind) -> np.ndarray:
    if kind is TransformKind.SIMILARITY:
        a, b, tx, ty = p
        return np.array([[a, -b, tx], [b, a, ty], [0.0, 0.0, 1.0]])
    return np.array([[p[0], p[1], p[2]], [p[3], p[4], p[5]], [0.0, 0.0, 1.0]])


def _warp_to_params(w: np.ndarray, kind: TransformKind) -> np.ndarray:
    if kind is TransformKind.SIMILARITY:
        # Nearest similarity of a general 2×2 (Frobenius): a = mean diagonal, b = mean skew.
        a = 0.5 * (w[0, 0] + w[1, 1])
        b = 0.5 * (w[1, 0] - w[0, 1])
        return np.array([a, b, w[0, 2], w[1, 2]])
    return np.array([w[0, 0], w[0, 1], w[0, 2], w[1, 0], w[1, 1], w[1, 2]])


def _overlap(t: _Level, f: _Level, w_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Composite pixel map template → follow-up and the valid-pixel mask on the template grid."""
    m_px = np.linalg.inv(f.px_to_mm) @ w_mm @ t.px_to_mm
    inside = _warp(f.mask.astype(np.uint8), m_px, t.image.shape, nearest=True) > 0
    # Stay one pixel clear of the follow-up's border, where interpolation reads the zero pad.
    ones = np.ones(f.image.shape, np.float32)
    inside &= _warp(ones, m_px, t.image.shape) > 0.999
    return m_px, inside & t.mask


def _ecc(t: _Level, f: _Level, w0: np.ndarray, kind: TransformKind, iterations: int,
         max_scale_change: float, robust: bool = True) -> tuple[np.ndarray, float]:
    """Maximise the correlation of ``t`` and ``f`` warped by ``w`` (base mm → follow-up mm).

    Returns the warp and the final correlation coefficient.
    """
    rows, cols = t.image.shape
    p = _warp_to_params(w0, kind)
    xs = (np.arange(cols, dtype=np.float64) + 0.5) * t.spacing_rc[1]
    ys = (np.arange(rows, dtype=np.float64) + 0.5) * t.spacing_rc[0]
    # Centre the coordinates so the normal equations are well conditioned.
    cx, cy = float(xs.mean()), float(ys.mean())
    centre = np.array([[1.0, 0.0, cx], [0.0, 1.0, cy], [0.0, 0.0, 1.0]])
    p = _warp_to_params(_params_to_warp(p, kind) @ centre, kind)  # warp of centred coords
    xx, yy = np.meshgrid(xs - cx, ys - cy)
    half_diag = 0.5 * math.hypot(xs[-1] - xs[0], ys[-1] - ys[0])
    step_tol = 0.01 * min(t.spacing_rc)
    max_step = _MAX_STEP_PX * max(t.spacing_rc)
    rho = -1.0
    uncentre = np.linalg.inv(centre)
    for _ in range(iterations):
        w_mm = _params_to_warp(p, kind) @ uncentre
        m_px, valid = _overlap(t, f, w_mm)
        idx = np.flatnonzero(valid)
        if idx.size < 50:
            raise _EccFailure("the films hardly overlap")
        tmpl = t.image.ravel()[idx].astype(np.float64)
        warped = _warp(f.image, m_px, t.image.shape).ravel()[idx].astype(np.float64)
        gx = _warp(f.grad_x, m_px, t.image.shape).ravel()[idx].astype(np.float64)
        gy = _warp(f.grad_y, m_px, t.image.shape).ravel()[idx].astype(np.float64)
        x = xx.ravel()[idx]
        y = yy.ravel()[idx]
        if kind is TransformKind.SIMILARITY:
            jac = np.stack([gx * x + gy * y, gy * x - gx * y, gx, gy], axis=1)
        else:
            jac = np.stack([gx * x, gx * y, gx, gy * x, gy * y, gy], axis=1)
        tmpl -= tmpl.mean()
        warped -= warped.mean()
        t_norm = _norm(tmpl)
        w_norm = _norm(warped)
        if t_norm == 0.0 or w_norm == 0.0:
            raise _EccFailure("an image is flat over the overlap")
        if robust:
            # Iteratively reweighted: pixels whose normalised residual is far beyond the
            # typical one (a lesion that grew, a marker) lose weight (Tukey biweight).
            resid = tmpl / t_norm - warped / w_norm
            sigma = 1.4826 * float(np.median(np.abs(resid))) + 1e-12
            u = resid / (_TUKEY_C * sigma)
            # Rows are scaled by the square root of the Tukey weight (1 - u²)².
            weight = _reject_changed_objects(np.clip(1.0 - u * u, 0.0, None), idx, t.image.shape, t.spacing_rc)
            tmpl *= weight
            warped *= weight
            jac *= weight[:, None]
            tmpl -= tmpl.mean()
            warped -= warped.mean()
            t_norm = _norm(tmpl)
            w_norm = _norm(warped)
        correlation = _vdot(tmpl, warped)
        rho = correlation / (t_norm * w_norm)
        hessian = _gram(jac)
        try:
            h_inv = np.linalg.inv(hessian)
        except np.linalg.LinAlgError:
            raise _EccFailure("singular ECC Hessian") from None
        proj_w = _tdot(jac, warped)
        proj_t = _tdot(jac, tmpl)
        h_proj_w = h_inv @ proj_w
        lambda_n = w_norm * w_norm - float(proj_w @ h_proj_w)
        lambda_d = correlation - float(proj_t @ h_proj_w)
        if lambda_d <= 0.0:
            raise _EccFailure("the images are uncorrelated")
        error = (lambda_n / lambda_d) * tmpl - warped
        delta = h_inv @ _tdot(jac, error)
        if kind is TransformKind.SIMILARITY:
            motion = abs(delta[2]) + abs(delta[3]) + half_diag * (abs(delta[0]) + abs(delta[1]))
        else:
            motion = abs(delta[2]) + abs(delta[5]) + half_diag * float(np.abs(delta[[0, 1, 3, 4]]).sum())
        if motion > max_step:
            # Trust region: far from the optimum the Gauss-Newton step of the ECC can jump
            # anywhere (a limb 5 mm off along its axis: scale 1.0 -> 0.83 in one step, then
            # no overlap); shortened, it climbs to the nearest optimum.
            delta *= max_step / motion
            motion = max_step
        p = p + delta
        if kind is TransformKind.SIMILARITY:
            scale = math.hypot(p[0], p[1])
        else:
            scale = math.sqrt(abs(p[0] * p[4] - p[1] * p[3]))
        if not (1.0 - max_scale_change - 0.1 <= scale <= 1.0 / (1.0 - max_scale_change) + 0.1):
            raise _EccFailure(f"implausible magnification {scale:.3f}")
        if motion < step_tol:
            break
    return _params_to_warp(p, kind) @ uncentre, rho


def _reject_changed_objects(weight: np.ndarray, idx: np.ndarray, shape: tuple[int, int],
                            spacing_rc: tuple[float, float]) -> np.ndarray:
    """Zero the robust weights over whole changed objects.

    ``weight`` holds the square roots of the Tukey weights of the pixels ``idx`` (flat indices
    into a grid of ``shape`` with ``spacing_rc`` mm pixels). Connected patches of rejected
    pixels (Tukey weight < 1/4, i.e. ``weight`` < 1/2) of at least ``_CHANGED_MIN_AREA_MM2`` are
    grown by ``_CHANGED_GROW_MM`` and their weights set to 0; smaller patches keep their
    per-pixel weights. Returns a new array.
    """
    rejected = np.zeros(shape[0] * shape[1], np.uint8)
    rejected[idx] = weight < 0.5
    n, labels, stats, _ = cv2.connectedComponentsWithStats(rejected.reshape(shape), connectivity=8)
    big = stats[:, cv2.CC_STAT_AREA] * (spacing_rc[0] * spacing_rc[1]) >= _CHANGED_MIN_AREA_MM2
    big[0] = False  # the background (kept pixels)
    if not big.any():
        return weight
    r_r = max(1, int(round(_CHANGED_GROW_MM / spacing_rc[0])))
    r_c = max(1, int(round(_CHANGED_GROW_MM / spacing_rc[1])))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r_c + 1, 2 * r_r + 1))
    changed = cv2.dilate(big[labels].astype(np.uint8), disc).ravel()[idx] > 0
    return np.where(changed, 0.0, weight)


def _quality(t: _Level, f: _Level, w_mm: np.ndarray) -> tuple[float, float]:
    """Quality of a registration and the overlap.

    Quality is the correlation of the two gradient images over the overlap after removing
    their local mean (Gaussian, ``_QUALITY_HIGHPASS_MM``) and clipping outliers, clipped to
    [0, 1]: without the high-pass the mere layout of body and air correlates well between any
    two limbs. Overlap is
    the fraction of the baseline's mask the follow-up covers.
    """
    m_px, valid = _overlap(t, f, w_mm)
    n_template = int(t.mask.sum())
    overlap = float(valid.sum()) / max(n_template, 1)
    if valid.sum() < 50:
        return 0.0, overlap
    sigma = _QUALITY_HIGHPASS_MM / min(t.spacing_rc)
    weight = cv2.GaussianBlur(valid.astype(np.float32), (0, 0), sigma) + np.float32(1e-6)

    def highpass(image: np.ndarray) -> np.ndarray:
        image = image * valid
        values = (image - cv2.GaussianBlur(image, (0, 0), sigma) / weight)[valid].astype(np.float64)
        # Clip at 5 robust sigmas: a few extreme pixels (the rim of a marker, a lesion that
        # grew) must not decide the score.
        med = float(np.median(values))
        spread = _QUALITY_CLIP * 1.4826 * float(np.median(np.abs(values - med))) + 1e-12
        return np.clip(values, med - spread, med + spread)

    a = highpass(t.raw)
    b = highpass(_warp(f.raw, m_px, t.image.shape))
    a -= a.mean()
    b -= b.mean()
    denom = _norm(a) * _norm(b)
    rho = _vdot(a, b) / denom if denom > 0 else 0.0
    return max(0.0, min(1.0, rho)), overlap


def _phase_shift(t: _Level, f: _Level, w_mm: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Refine the translation of ``w_mm`` by phase correlation; returns the warp and its score.

    The follow-up is warped onto the baseline grid with ``w_mm`` first, so only a shift is
    left to find; the score is the masked correlation after the shift.
    """
    m_px, valid = _overlap(t, f, w_mm)
    if valid.sum() < 50:
        return None
    warped = _warp(f.image, m_px, t.image.shape) * valid
    window = cv2.createHanningWindow((t.image.shape[1], t.image.shape[0]), cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate((t.image * t.mask).astype(np.float32), warped.astype(np.float32), window)
    if not (np.isfinite(dx) and np.isfinite(dy)):
        return None
    # warped(y) ~ base(y - d): the follow-up sample for baseline point y sits at w(y + d).
    shift = np.array([[1.0, 0.0, dx * t.spacing_rc[1]], [0.0, 1.0, dy * t.spacing_rc[0]], [0.0, 0.0, 1.0]])
    w = w_mm @ shift
    score, _ = _quality(t, f, w)
    return w, score


def _rotation_about(t: _Level, angle_deg: float) -> np.ndarray:
    """Similarity base mm -> follow-up mm: a rotation about the baseline grid's centre."""
    rows, cols = t.image.shape
    cx, cy = 0.5 * cols * t.spacing_rc[1], 0.5 * rows * t.spacing_rc[0]
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    to_c = np.array([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]])
    return np.linalg.inv(to_c) @ rot @ to_c


def _search_starts(t: _Level, f: _Level, max_rotation_deg: float, step_deg: float, keep: int) -> list[tuple[str, np.ndarray]]:
    """Coarse global search: rotations in steps, translation by phase correlation for each."""
    n = max(0, int(math.floor(max_rotation_deg / step_deg)))
    scored = []
    for k in range(-n, n + 1):
        found = _phase_shift(t, f, _rotation_about(t, k * step_deg))
        if found is not None:
            scored.append((found[1], k * step_deg, found[0]))
    scored.sort(key=lambda s: -s[0])
    return [(f"search {angle:+g} deg", w) for _, angle, w in scored[:keep]]


def _score(quality: float, overlap: float, min_overlap: float) -> float:
    """Rank of a fit: its quality, penalised when it leaves most of the baseline uncovered."""
    return quality if overlap >= min_overlap else quality * overlap


def _fit(levels: list[tuple[_Level, _Level]], candidates: list[tuple[str, np.ndarray]],
         kind: TransformKind, params: CompareParams) -> tuple[str, np.ndarray, float, float]:
    """Fit every start on the coarsest level, refine each distinct result down the pyramid and
    keep the one of best quality on the finest level: (start, warp, quality, overlap).

    Ranking on the coarsest level alone is not enough: at 4 mm the high-passed quality hardly
    tells a limb 45 mm off along its axis from the right place (development pair 128 with the
    films swapped: 0.96 against 0.91), and the wrong fit then failed at 1 mm. A start whose
    coarse fit slid (kept less than ``_SLID_OVERLAP_FRACTION`` of the start's overlap, or fell
    under ``min_overlap``) is refined from the start itself as well.
    """
    t0, f0 = levels[0]
    coarse_iterations = min(params.max_iterations, 40)
    fits: list[tuple[float, str, np.ndarray]] = []
    for name, guess in candidates:
        try:
            w, rho = _ecc(t0, f0, guess, kind, coarse_iterations, params.max_scale_change,
                          robust=len(levels) == 1)
        except _EccFailure as exc:
            logger.debug("registration start %s failed: %s", name, exc)
            continue
        # Rank by the structure correlation (not the ECC value, which the body/air layout
        # inflates), penalising starts that leave most of the baseline uncovered.
        quality, overlap = _quality(t0, f0, w)
        logger.debug("registration start %s: correlation %.3f, quality %.3f, overlap %.2f",
                     name, rho, quality, overlap)
        fits.append((_score(quality, overlap, params.min_overlap), name, w))
        q0, ov0 = _quality(t0, f0, guess)
        if overlap < max(params.min_overlap, _SLID_OVERLAP_FRACTION * ov0):
            # Slid off: along a limb without bone the 4 mm image is a featureless tube, and the
            # correlation (normalised over whatever overlaps) loses nothing by sliding until
            # most of the baseline is uncovered (pair 398: 0.9989 at 26 % against 0.9985 at the
            # right pose), or, on a tapered limb, slides and shrinks along the cone (pair 318:
            # overlap 0.92 -> 0.47 at scale 0.91). The finer levels see the along-axis
            # structure: the start itself is refined too, and the finest level's score decides.
            if ov0 >= params.min_overlap:
                fits.append((_score(q0, ov0, params.min_overlap), f"{name} (coarse fit slid off)", guess))
    if not fits:
        raise RegistrationError(
            "films do not align: registration found no overlap or correlation; different body part or view?"
        )
    fits.sort(key=lambda fit: -fit[0])
    # Starts that converged to the same place (within a pixel of the coarsest level) are one.
    distinct: list[tuple[float, str, np.ndarray]] = []
    for fit in fits:
        if all(_max_motion_mm(fit[2], other[2], t0) > max(t0.spacing_rc) for other in distinct):
            distinct.append(fit)
    t_fine, f_fine = levels[-1]
    best: tuple[float, str, np.ndarray, float, float] | None = None
    failure = ""
    for _, name, w in distinct:
        try:
            w = _refine(levels[1:], w, kind, params)
        except _EccFailure as exc:
            logger.debug("registration from start %s failed: %s", name, exc)
            failure = failure or str(exc)
            continue
        quality, overlap = _quality(t_fine, f_fine, w)
        score = _score(quality, overlap, params.min_overlap)
        if best is None or score > best[0]:
            best = (score, name, w, quality, overlap)
    if best is None:
        raise RegistrationError(
            f"films do not align: refinement at {t_fine.spacing_rc[0]:.1f} mm failed ({failure}); "
            "different body part or view?"
        )
    return best[1], best[2], best[3], best[4]


def _refine(levels: list[tuple[_Level, _Level]], w: np.ndarray, kind: TransformKind,
            params: CompareParams) -> np.ndarray:
    """Refine ``w`` down ``levels`` (robust weights on the last); raises _EccFailure."""
    for k, (t, f) in enumerate(levels, start=1):
        w, _ = _ecc(t, f, w, kind, params.max_iterations, params.max_scale_change, robust=k == len(levels))
    return w


def _max_motion_mm(w1: np.ndarray, w2: np.ndarray, t: _Level) -> float:
    """Largest distance between the images of the corners of ``t``'s grid under two warps."""
    rows, cols = t.image.shape
    h, wd = rows * t.spacing_rc[0], cols * t.spacing_rc[1]
    corners = np.array([[0.0, 0.0, 1.0], [wd, 0.0, 1.0], [0.0, h, 1.0], [wd, h, 1.0]]).T
    return float(np.hypot(*((w1 - w2)[:2] @ corners)).max())


def _affine_from(levels: list[tuple[_Level, _Level]], w_sim: np.ndarray,
                 params: CompareParams) -> tuple[np.ndarray, bool]:
    """Affine refinement of the converged similarity ``w_sim`` on the finest level.

    Returns the warp and whether the affine was kept. Shear and anisotropic scale are fitted
    only from the similarity's optimum and only on the finest level: along a limb (a tube)
    a shear that slides each column along the axis keeps every skin line and cortex in place,
    so from the coarse levels the affine ECC drifted along it (development pair 119: 50 mm
    off at quality 0.82) or diverged (118). The affine is kept only when its robust ECC misfit
    (1 - correlation, what the finest level maximises) is at most ``_AFFINE_MIN_GAIN`` times
    the similarity's. Otherwise its extra freedom only absorbs what changed: on development
    pairs 100-199 (similarity truth) it removed at most 2.8 % of the misfit while moving the
    lesions by up to 1.7 mm; a real 1 % stretch (test scene, noise 0.02) removes 16 %, a 3 %
    stretch of development pairs 100-149 removes more than 10 % on 37 of 50 (then 0.04-0.51 mm
    at the lesions; the similarity: 1.1-2.4 mm). A kept affine that is
    far from any similarity is refused (``_MAX_AFFINE_DEPARTURE``).
    """
    t, f = levels[-1]
    try:
        w_aff, _ = _ecc(t, f, w_sim, TransformKind.AFFINE, params.max_iterations,
                        params.max_scale_change, robust=True)
    except _EccFailure as exc:
        logger.info("affine refinement failed (%s): similarity kept", exc)
        return w_sim, False
    misfit_sim = 1.0 - _robust_correlation(t, f, w_sim)
    misfit_aff = 1.0 - _robust_correlation(t, f, w_aff)
    if misfit_aff > _AFFINE_MIN_GAIN * misfit_sim:
        logger.info("affine fit does not improve on the similarity (misfit %.5f vs %.5f): similarity kept",
                    misfit_aff, misfit_sim)
        return w_sim, False
    departure = _departure_from_similarity(w_aff)
    if departure > _MAX_AFFINE_DEPARTURE:
        raise RegistrationError(
            f"films do not align: the affine fit has {departure:.0%} shear or stretch "
            f"(limit {_MAX_AFFINE_DEPARTURE:.0%}), implausible for one limb; try transform = similarity"
        )
    return w_aff, True


def _robust_correlation(t: _Level, f: _Level, w: np.ndarray) -> float:
    """The robustly weighted ECC correlation of ``w`` on level ``t``/``f`` (what the finest
    level maximises): one iteration evaluates it; its step is discarded."""
    try:
        return _ecc(t, f, w, TransformKind.AFFINE, 1, 0.9, robust=True)[1]
    except _EccFailure:
        return 0.0


def _departure_from_similarity(w: np.ndarray) -> float:
    """Shear and anisotropic stretch of ``w``: the largest singular value of its linear part
    minus the nearest similarity, relative to that similarity's scale (0 for a similarity)."""
    lin = w[:2, :2]
    a = 0.5 * (lin[0, 0] + lin[1, 1])
    b = 0.5 * (lin[1, 0] - lin[0, 1])
    rest = lin - np.array([[a, -b], [b, a]])
    return float(np.linalg.svd(rest, compute_uv=False)[0]) / max(math.hypot(a, b), 1e-12)


def _grow_exclusion(mask: np.ndarray, spacing_rc: tuple[float, float]) -> np.ndarray:
    """Shrink the kept area of ``mask`` by ``_EXCLUSION_MARGIN_MM`` (an ellipse in pixels)."""
    r_r = max(1, int(math.ceil(_EXCLUSION_MARGIN_MM / spacing_rc[0])))
    r_c = max(1, int(math.ceil(_EXCLUSION_MARGIN_MM / spacing_rc[1])))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r_c + 1, 2 * r_r + 1))
    # The film's border is not an exclusion: pad with "kept".
    return cv2.erode(mask.astype(np.uint8), disc, borderType=cv2.BORDER_CONSTANT, borderValue=1) > 0


def _collimation(image: np.ndarray, spacing_rc: tuple[float, float]) -> np.ndarray:
    """Collimated bands of a film resampled to ``spacing_rc``, searched across the whole side.

    The mask handed in may miss bands deeper than the segmentation looks
    (``SegmentParams.collimation_max_depth_mm``); a missed band's blade edge is fixed to the
    film, long and straight, and drags the fit and the quality with it (a forearm in a 120 mm
    wide field of a 350 mm film: quality 0.31, refused). The same detector as the
    segmentation's, searched deeper, and each band kept only if flat (a plateau, not anatomy).
    """
    found = _flat_bands(image, spacing_rc)
    if found.any() and not found.all():
        # Second pass inside the field's bounding box: a shallow band across the field's ends
        # (top and bottom of a long strip) fails the detector's "brighter than just inside"
        # test on the whole film, where the deep side bands make up most of "just inside".
        rows = np.flatnonzero((~found).any(axis=1))
        cols = np.flatnonzero((~found).any(axis=0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        if min(rows.size, cols.size) >= 16:
            # The segmentation's own depth, no plateau test: the anatomy under a thin band
            # shows through it (forearm phantom: spread 0.045 of the range).
            found[box] |= find_collimation(image[box], math.sqrt(spacing_rc[0] * spacing_rc[1]), SegmentParams())
    return found


def _flat_bands(image: np.ndarray, spacing_rc: tuple[float, float]) -> np.ndarray:
    """The segmentation's detector searched across the whole side, plateaus only."""
    ws = math.sqrt(spacing_rc[0] * spacing_rc[1])
    depth_mm = _COLLIMATION_MAX_DEPTH_FRACTION * max(image.shape[0] * spacing_rc[0], image.shape[1] * spacing_rc[1])
    found = find_collimation(image, ws, SegmentParams(collimation_max_depth_mm=depth_mm))
    if not found.any():
        return found
    p1, p99 = np.percentile(image, [1.0, 99.0])
    span = max(float(p99 - p1), 1e-6)
    n, labels = cv2.connectedComponents(found.astype(np.uint8), connectivity=4)
    keep = np.zeros(n, bool)
    for k in range(1, n):
        values = image[labels == k]
        spread = float(np.median(np.abs(values - np.median(values)))) / span
        keep[k] = spread <= _COLLIMATION_MAX_SPREAD
    return keep[labels]


def _check_film(film: Film, role: str) -> tuple[float, float]:
    if film.spacing_mm is None:
        raise IncompatibleFilmsError(
            f"{role} film {film.name!r} has no pixel spacing: registration works in mm; "
            "give the spacing with --spacing MM (calcimage.load(path, spacing_mm=...))"
        )
    return film.spacing_mm


def _check_mask(mask: np.ndarray | None, film: Film, role: str) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != film.shape:
        raise ValueError(f"{role} mask has shape {mask.shape}, the film {film.shape}")
    if mask.sum() < 0.01 * mask.size:
        # Almost nothing usable: fall back to the whole film rather than fail on a bad mask.
        logger.warning("%s registration mask covers %.1f %% of the film: ignored", role, 100 * mask.mean())
        return None
    return mask


def register(base_film: Film, follow_film: Film, *, base_mask: np.ndarray | None = None,
             follow_mask: np.ndarray | None = None, params: CompareParams = CompareParams()) -> Registration:
    """Align a follow-up film onto its baseline.

    Parameters
    ----------
    base_film, follow_film
        Films with pixel spacing (any spacing; they need not agree).
    base_mask, follow_mask
        Optional boolean masks (each the shape of its film) of the pixels registration may use:
        True except on collimation and markers; the excluded areas are grown by 2 mm (their
        penumbra) here, so exact masks will do. Collimated bands a mask misses are found and
        excluded here too (see ``_collimation``). Lesions need no mask: they are what changes,
        but most change little and anchor the fit, and robust weights discount those that do.
    params
        ``transform``, ``registration_spacings_mm``, ``max_iterations``, ``min_quality``,
        ``min_overlap`` and ``max_scale_change`` are used.

    Returns
    -------
    Registration
        ``matrix`` maps follow-up (row, col, 1) to baseline (row, col); ``scale`` is the
        physical magnification of the follow-up relative to the baseline.

    Raises
    ------
    RegistrationError
        The films do not align: the fit failed, its quality is below ``min_quality``, the
        overlap below ``min_overlap`` or the magnification implausible.
    IncompatibleFilmsError
        A film has no pixel spacing.
    """
    sp_b = _check_film(base_film, "baseline")
    sp_f = _check_film(follow_film, "follow-up")
    base_mask = _check_mask(base_mask, base_film, "baseline")
    follow_mask = _check_mask(follow_mask, follow_film, "follow-up")
    kind = params.transform
    finest_native = max(min(sp_b), min(sp_f))
    targets = [max(s, finest_native) for s in params.registration_spacings_mm]
    targets = sorted(set(targets), reverse=True)

    # Resample the full films once, to the finest level; coarser levels start from that.
    fine_b, fine_mask_b, fine_sp_b = _resample(base_film.pixels, sp_b, targets[-1], base_mask)
    fine_f, fine_mask_f, fine_sp_f = _resample(follow_film.pixels, sp_f, targets[-1], follow_mask)
    # Collimated bands the masks missed (too deep for the segmentation) are excluded too.
    coll_b = _collimation(fine_b, fine_sp_b)
    coll_f = _collimation(fine_f, fine_sp_f)
    masked_b = base_mask is not None or bool(coll_b.any())
    masked_f = follow_mask is not None or bool(coll_f.any())
    # Not in place: at >= 1 mm native spacing the resampled mask is the caller's array.
    fine_mask_b = fine_mask_b & ~coll_b
    fine_mask_f = fine_mask_f & ~coll_f
    # Masks may be drawn exactly on the excluded object (its penumbra left outside): grow them.
    if masked_b:
        fine_mask_b = _grow_exclusion(fine_mask_b, fine_sp_b)
    if masked_f:
        fine_mask_f = _grow_exclusion(fine_mask_f, fine_sp_f)
    levels = [
        (_level(fine_b, fine_sp_b, s, fine_mask_b if masked_b else None),
         _level(fine_f, fine_sp_f, s, fine_mask_f if masked_f else None))
        for s in targets
    ]

    # Candidate starts on the coarsest level; _fit refines each distinct one and keeps the best.
    t0, f0 = levels[0]
    candidates: list[tuple[str, np.ndarray]] = [("identity", np.eye(3))]
    candidates += _search_starts(t0, f0, _SEARCH_ROTATION_DEG, _SEARCH_STEP_DEG, keep=3)

    start, w, quality, overlap = _fit(levels, candidates, TransformKind.SIMILARITY, params)
    note = ""
    if kind is TransformKind.AFFINE:
        w, kept = _affine_from(levels, w, params)
        if kept:
            quality, overlap = _quality(*levels[-1], w)
        else:
            # Recorded as what was fitted; the method says why.
            kind = TransformKind.SIMILARITY
            note = ", affine requested but not supported by the films: similarity kept"
    scale = math.sqrt(abs(float(np.linalg.det(w[:2, :2]))))
    if abs(math.log(scale)) > -math.log(1.0 - params.max_scale_change):
        raise RegistrationError(
            f"films do not align: magnification {scale:.3f} is implausible "
            f"(limit ±{params.max_scale_change:.0%}); different body part or view?"
        )
    if quality < params.min_quality:
        raise RegistrationError(
            f"films do not align: quality {quality:.3f} < {params.min_quality:g}; different body part or view?"
        )
    if overlap < params.min_overlap:
        raise RegistrationError(
            f"films do not align: the registered follow-up covers {overlap:.0%} of the baseline "
            f"(< {params.min_overlap:.0%}); different body part or view?"
        )

    # Follow-up mm -> baseline mm, then into each film's full-resolution pixel grid.
    inv_mm_xy = np.linalg.inv(w)
    inv_mm_rc = _SWAP @ inv_mm_xy @ _SWAP
    q_b = np.array([[sp_b[0], 0.0, 0.5 * sp_b[0]], [0.0, sp_b[1], 0.5 * sp_b[1]], [0.0, 0.0, 1.0]])
    q_f = np.array([[sp_f[0], 0.0, 0.5 * sp_f[0]], [0.0, sp_f[1], 0.5 * sp_f[1]], [0.0, 0.0, 1.0]])
    matrix_px = np.linalg.inv(q_b) @ inv_mm_rc @ q_f
    lin = inv_mm_rc[:2, :2]
    rotation = math.degrees(math.atan2(lin[1, 0] - lin[0, 1], lin[0, 0] + lin[1, 1]))
    reg = Registration(
        matrix=matrix_px[:2].copy(),
        scale=scale,
        quality=quality,
        rotation_deg=rotation,
        method=f"ecc-{kind.value} on gradient magnitude, levels {','.join(f'{s:g}' for s in targets)} mm, start {start}{note}",
        translation_mm=(float(inv_mm_rc[0, 2]), float(inv_mm_rc[1, 2])),
        matrix_mm=inv_mm_rc[:2].copy(),
        overlap=overlap,
        transform=kind,
    )
    logger.info("registration: scale %.4f, rotation %.2f deg, quality %.3f (start %s)",
                scale, rotation, quality, start)
    return reg
