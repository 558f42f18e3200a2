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
   These hand rules test contrast in units of ``rule_k_sigma`` local sigmas.
7. **Score** every component left with the candidate model (:mod:`calcimage.candidates`)
   and keep those at ``min_score`` or above: with seeds as low as ``k_sigma`` = 3 sigmas,
   the model, not the threshold, tells faint lesions from noise and anatomy.
"""

from __future__ import annotations

import enum
import logging
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage import filters, measure as skmeasure

from calcimage.candidates import component_features, load_model, predict_proba
from calcimage.film import Film
from calcimage.params import require, require_positive, require_range
from calcimage.pixels import (PixelGrid, examined_pixel_features, load_pixel_model, pixel_features,
                              pixel_probability)

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
    """Every knob of :func:`segment`. Sizes and scales are in mm (docs/method.md has the
    step-by-step description; defaults were tuned on phantom seeds 0-49).

    Attributes
    ----------
    method, k_sigma, fixed_threshold
        Threshold rule (:class:`ThresholdMethod`); ``auto`` seeds are at least ``k_sigma``
        local noise sigmas above the background; ``fixed`` uses ``fixed_threshold`` (film
        units over the local background, required then).
    low_ratio
        Hysteresis: seeds grow through pixels above ``low_ratio`` × the threshold.
    min_area_mm2
        Components smaller than this are dropped (Agatston's 1 mm²).
    smooth_mm
        Gaussian sigma applied before thresholding (noise equalisation across spacings).
    work_spacing_mm
        Pixel size of the reduced copy used for the large-scale steps.
    denoise_mm, envelope_mm, envelope_clip, envelope_grid_mm
        Background: bilateral denoise scale; lower envelope = iterated clipped local-linear
        smoothing at ``envelope_mm``, clipped ``envelope_clip`` noise sigmas above the
        current estimate, computed on a ``envelope_grid_mm`` grid.
    background_mm, disc_background
        Diameter of the grey-opening disc the background is raised to (when enabled).
    ridge_line_mm, ridge_angle_mm
        Line openings of ``ridge_line_mm`` along bone, in pi * L / ``ridge_angle_mm``
        orientations (cortex suppression); 0 disables.
    noise_mm, noise_fine_mm
        Local noise sigma: median over ``noise_mm``, not below the median over
        ``noise_fine_mm`` (0 disables), not above ``noise_max_factor`` × the body-wide value
        (0 disables).
    bone_scale_mm, bone_min_relative, bone_margin_mm, bone_factor
        Bone = background excess over a ``bone_scale_mm`` opening above
        ``bone_min_relative`` of the tissue height above air, at least ``bone_min_width_mm``
        wide (an opening; 0 disables); ``bone_margin_mm`` grows it for the line openings
        and the cortex-line cut; ``auto`` thresholds are multiplied by ``bone_factor`` over bone.
        Candidates without a sharp outline are retried at 1.5, 2 and 3 × ``bone_min_relative``.
    bone_bridge_mm
        The bone mask is closed with a line this long along its principal axis (gaps in a
        shaft); 0 disables.
    sigma_skip_cortex
        Leave the band along the bone outline out of the noise estimate (residual cortical
        ridges would inflate it for every block they cross).
    gate_fraction
        Components must keep this share of their summed contrast on the working grid.
    edge_fraction, edge_mm
        Lesion edges are cut at ``edge_fraction`` × the highest flattened value within
        ``edge_mm`` (not below the hysteresis low threshold), so blur does not inflate dense
        lesions; 0.1 suits rounded, detector-blurred profiles, 0.5 flat-topped ones.
    collimation_max_depth_mm, collimation_margin_mm
        How deep a collimated band may reach into the film, and the penumbra margin.
    marker_min_area_mm2
        Saturated plateaus (film maximum) of at least this area away from the film edge are
        lead markers: their bounding box is excluded (0 disables).
    body_min_area_mm2, body_margin_mm, marker_margin_mm, film_edge_mm
        Body components at least this big; body grown by ``body_margin_mm`` into air;
        marker/text masks grown by ``marker_margin_mm``; a frame of ``film_edge_mm`` along
        the film edge is left out.
    assumed_spacing_mm
        Scale used for films without spacing (sizes only; outputs still say "no spacing").
    ridge_max_width_mm, ridge_min_length_mm, ridge_min_elongation, cortex_band_mm, cortex_factor
        Ridges dropped after labelling: longer than ``ridge_min_length_mm`` (major axis from
        the moments) and thinner than ``ridge_max_width_mm`` (see ``ridge_solid_*``); or
        mostly within ``cortex_band_mm`` of the bone outline and
        ``ridge_min_elongation`` × longer than wide; with ``cortex_factor`` > 1, anything on
        that band needs that many times its local threshold. ``ridge_keep_factor`` > 0:
        an elongated component on the band reaching that many times its local threshold is
        kept (a plaque along the cortex; a residual cortical line is fainter).
    ridge_solid_length_mm, ridge_solid_contrast
        A long thin component shorter than ``ridge_solid_length_mm`` whose median contrast is
        at least ``ridge_solid_contrast`` × its local threshold is not a ridge: a plaque grown
        on a follow-up (the edge of an unrecognised bone end is mostly faint skirt).
    ridge_keep_min_mm2, ridge_keep_max_angle_deg
        An elongated component on the cortex band is also kept when it is at least
        ``ridge_keep_min_mm2``, its median contrast reaches its local threshold and it runs
        within ``ridge_keep_max_angle_deg`` of the bone axis: a plaque along the cortex is
        solid over its length, while what is left of a cortical line is small or patchy,
        and a joint surface or growth plate runs across the bone. 0 disables.
    bone_edge_mm
        A bone region must have a sharp outline: its steepest slope near the outline times
        this must reach its median height over the coarse opening (a rounded limb's middle
        does not); 0 disables.
    bone_extend_mm, bone_extend_level
        From the ends of recognised bone, its continuation along the bone axis (up to
        ``bone_extend_mm``, at least half ``bone_min_width_mm`` wide) is bone where it rises
        ``bone_extend_level`` × ``bone_min_relative`` over the coarse opening; 0 disables.
    line_sigma_mm, line_ratio, line_min_length_mm
        Near bone, line-like pixels (Hessian at ``line_sigma_mm``: one curvature strongly
        negative, the other within ``line_ratio`` of it) are cut from the mask before
        labelling so a lesion is not merged with a cortical line; 0 disables. Only line
        pieces spanning at least ``line_min_length_mm`` count (plaques are short lines).
    line_baseline_mm, line_keep_min_mm2
        A plaque lying along the cortex is a bump on the cortical line: line pixels standing
        a detection threshold above the line's own level (an opening ``line_baseline_mm``
        long along it) stay, in pieces of at least ``line_keep_min_mm2``; 0 cuts whole lines.
    drop_edge_touching, edge_open_mm
        Drop components reaching the film frame, a collimator edge, a marker or the outside;
        before that such a component is opened with a disc of ``edge_open_mm`` (0 = no)
        and its pieces away from the edge are kept (a lesion over bone merged with a
        cortical line that runs off the film).
    plaque_min_elongation, plaque_min_length_mm, plaque_max_solidity, plaque_min_area_mm2
        Plaque when (elongation ≥ and major axis ≥ the first two) or (area ≥ the last and
        solidity ≤ the third); otherwise nodule.
    min_score, score_model
        Every component left is scored by a boosted-tree model over its contrast, size, shape
        and position (:mod:`calcimage.candidates`); those under ``min_score`` (a probability,
        0..1) are dropped, 0 keeps all. ``k_sigma`` is low by default because this model,
        not the threshold, tells faint lesions from noise and anatomy. ``score_model``: path
        of a JSON model (``benchmarks/train_candidates.py``); None is the shipped one,
        trained for the default parameters.
    pixel_min_prob, pixel_min_area_mm2, pixel_min_gap_mm, pixel_model
        ``auto``: a pixel model (:mod:`calcimage.pixels`) rates every pixel of the flattened
        film from its surroundings; where it reaches ``pixel_min_prob`` over a connected
        region of at least ``pixel_min_area_mm2`` (and ``min_area_mm2``), farther than
        ``pixel_min_gap_mm`` from every lesion found by the steps above, the region is added
        as a lesion (lesions that anatomy hides from the rules: a plaque beside a cortical
        line). 0 (the default) switches it off; 0.7 is the value tuned on films. It takes
        segmentation about 1.4× as long on a 300 × 350 mm film at 0.1 mm and adds little
        peak memory (docs/performance.md, *Session 16*); it stays off because on fresh
        pairs it made the worst retest worse (docs/accuracy.md, *Session 16*). A comparison
        measures a lesion it found on one film and the rules found on the other with one
        rule on both (``CompareParams.paired_pixel_model``). ``pixel_model``: path of a
        JSON model (``benchmarks/train_pixels.py``); None is the shipped one.
    pixel_extend_max
        A confident region that reaches a lesion the rules found, and of which that lesion
        covers less than this share, extends it: the lesion becomes the union of the two
        (the rules found a piece of a plaque). Regions the lesion covers more of, and regions
        near a lesion without reaching it, are left out. 0 never extends.
    pixel_max_length_mm
        Regions longer than this (major axis) are left out: the model was trained on
        phantom plaques 10–40 mm long (up to about 65 mm grown on follow-ups), and on a real
        leg film it rated a 114 mm stretch of unmasked fibula as one region.
    rule_k_sigma
        ``auto``: the contrast tests of the hand rules (line bumps, ridges, cortex band) are
        in units of this many local sigmas, as they were tuned, whatever the seed threshold
        ``k_sigma``.
    """

    method: ThresholdMethod = ThresholdMethod.AUTO
    min_area_mm2: float = 1.0
    k_sigma: float = 3.0
    low_ratio: float = 0.375
    fixed_threshold: float | None = None
    smooth_mm: float = 0.3
    background_mm: float = 16.0
    work_spacing_mm: float = 0.5
    noise_mm: float = 30.0
    noise_fine_mm: float = 15.0
    bone_scale_mm: float = 48.0
    bone_min_relative: float = 0.25
    bone_margin_mm: float = 4.0
    bone_factor: float = 1.0
    bone_min_width_mm: float = 10.0
    bone_bridge_mm: float = 50.0
    bone_extend_mm: float = 60.0
    bone_extend_level: float = 0.5
    noise_max_factor: float = 2.0
    bone_edge_mm: float = 5.0
    line_sigma_mm: float = 1.0
    line_ratio: float = 0.6
    drop_edge_touching: bool = True
    edge_open_mm: float = 3.0
    line_min_length_mm: float = 45.0
    line_baseline_mm: float = 30.0
    line_keep_min_mm2: float = 6.0
    marker_margin_mm: float = 2.0
    marker_min_area_mm2: float = 4.0
    assumed_spacing_mm: float = 0.2
    ridge_max_width_mm: float = 5.0
    ridge_min_length_mm: float = 60.0
    ridge_solid_length_mm: float = 75.0
    ridge_solid_contrast: float = 0.75
    ridge_min_elongation: float = 2.0
    cortex_band_mm: float = 3.0
    cortex_factor: float = 1.3
    ridge_keep_factor: float = 4.0
    ridge_keep_min_mm2: float = 15.0
    ridge_keep_max_angle_deg: float = 30.0
    sigma_skip_cortex: bool = True
    ridge_line_mm: float = 35.0
    ridge_angle_mm: float = 3.0
    gate_fraction: float = 0.5
    film_edge_mm: float = 3.0
    denoise_mm: float = 1.0
    envelope_mm: float = 4.0
    envelope_clip: float = 2.0
    envelope_grid_mm: float = 1.0
    disc_background: bool = True
    collimation_max_depth_mm: float = 100.0
    collimation_margin_mm: float = 1.5
    body_min_area_mm2: float = 400.0
    body_margin_mm: float = 2.0
    plaque_min_elongation: float = 2.5
    plaque_min_length_mm: float = 8.0
    plaque_max_solidity: float = 0.7
    plaque_min_area_mm2: float = 30.0
    edge_fraction: float = 0.1
    edge_mm: float = 3.0
    min_score: float = 0.6
    score_model: str | None = None
    rule_k_sigma: float = 4.5
    pixel_min_prob: float = 0.0
    pixel_min_area_mm2: float = 2.0
    pixel_min_gap_mm: float = 3.0
    pixel_model: str | None = None
    pixel_extend_max: float = 0.5
    pixel_max_length_mm: float = 80.0

    def __post_init__(self) -> None:
        require(isinstance(self.method, ThresholdMethod), "method", self.method,
                "one of " + ", ".join(m.value for m in ThresholdMethod))
        for name in ("min_area_mm2", "smooth_mm", "bone_margin_mm", "marker_margin_mm"):
            require_positive(name, getattr(self, name), allow_zero=True)
        require_positive("collimation_margin_mm", self.collimation_margin_mm, allow_zero=True)
        require_positive("bone_min_width_mm", self.bone_min_width_mm, allow_zero=True)
        require_positive("noise_max_factor", self.noise_max_factor, allow_zero=True)
        require_positive("bone_edge_mm", self.bone_edge_mm, allow_zero=True)
        require_positive("edge_open_mm", self.edge_open_mm, allow_zero=True)
        require_positive("line_min_length_mm", self.line_min_length_mm, allow_zero=True)
        require_positive("line_sigma_mm", self.line_sigma_mm, allow_zero=True)
        require_positive("line_baseline_mm", self.line_baseline_mm, allow_zero=True)
        require_positive("line_keep_min_mm2", self.line_keep_min_mm2, allow_zero=True)
        require_positive("ridge_keep_factor", self.ridge_keep_factor, allow_zero=True)
        require_positive("ridge_keep_min_mm2", self.ridge_keep_min_mm2, allow_zero=True)
        require_range("ridge_keep_max_angle_deg", self.ridge_keep_max_angle_deg, 0.0, 90.0)
        require_range("line_ratio", self.line_ratio, 0.0, 1.0)
        require_positive("marker_min_area_mm2", self.marker_min_area_mm2, allow_zero=True)
        require_positive("body_margin_mm", self.body_margin_mm, allow_zero=True)
        require_positive("bone_extend_mm", self.bone_extend_mm, allow_zero=True)
        require_range("bone_extend_level", self.bone_extend_level, 0.0, 1.0)
        require_positive("ridge_line_mm", self.ridge_line_mm, allow_zero=True)
        require_positive("bone_bridge_mm", self.bone_bridge_mm, allow_zero=True)
        require_positive("ridge_angle_mm", self.ridge_angle_mm)
        for name in ("k_sigma", "rule_k_sigma", "background_mm", "work_spacing_mm", "noise_mm", "bone_scale_mm",
                     "bone_factor",
                     "assumed_spacing_mm", "ridge_max_width_mm",
                     "ridge_min_length_mm", "ridge_solid_length_mm", "ridge_min_elongation", "ridge_solid_contrast", "collimation_max_depth_mm", "body_min_area_mm2", "plaque_min_elongation", "plaque_min_length_mm",
                     "plaque_min_area_mm2", "bone_min_relative"):
            require_positive(name, getattr(self, name))
        require_range("low_ratio", self.low_ratio, 0.05, 1.0)
        require_range("edge_fraction", self.edge_fraction, 0.0, 0.95)
        require_range("min_score", self.min_score, 0.0, 1.0)
        if self.score_model is not None:
            load_model(self.score_model)  # a missing or malformed model fails here, early
        require_range("pixel_min_prob", self.pixel_min_prob, 0.0, 1.0)
        require_positive("pixel_min_area_mm2", self.pixel_min_area_mm2, allow_zero=True)
        require_positive("pixel_min_gap_mm", self.pixel_min_gap_mm, allow_zero=True)
        require_range("pixel_extend_max", self.pixel_extend_max, 0.0, 1.0)
        require_positive("pixel_max_length_mm", self.pixel_max_length_mm)
        if self.pixel_model is not None:
            load_pixel_model(self.pixel_model)
        require_range("gate_fraction", self.gate_fraction, 0.0, 1.0)
        require_positive("film_edge_mm", self.film_edge_mm, allow_zero=True)
        require_positive("denoise_mm", self.denoise_mm)
        require_positive("envelope_mm", self.envelope_mm)
        require_positive("envelope_grid_mm", self.envelope_grid_mm)
        require_positive("noise_fine_mm", self.noise_fine_mm, allow_zero=True)
        require_positive("cortex_band_mm", self.cortex_band_mm)
        require_positive("cortex_factor", self.cortex_factor)
        require_positive("envelope_clip", self.envelope_clip, allow_zero=True)
        require_positive("edge_mm", self.edge_mm)
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
    threshold_map
        ``auto``: the local high threshold (film units) on the reduced working grid, i.e.
        ``threshold_k`` × local sigma (× ``bone_factor`` over bone); None otherwise.
    features
        float64 (n_lesions, len(:data:`calcimage.candidates.FEATURES`)): the features each
        lesion was scored on (row k - 1 for label k).
    scores
        ``scores[k - 1]``: the candidate model's probability that label k is a lesion, or,
        for a lesion the pixel model added (``pixel_min_prob``), its mean pixel probability
        (empty when ``min_score`` is 0: no candidate model is run).
    pixel_added
        bool (rows, cols): the lesions the pixel model (``pixel_min_prob``) added or
        extended, or None when it added none (or did not run). A comparison measures a
        lesion found this way on one film of a pair and by the rules on the other with one
        rule on both (docs/compare.md, section 4b).
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
    threshold_map: np.ndarray | None = None
    features: np.ndarray | None = None
    scores: tuple[float, ...] = ()
    pixel_added: np.ndarray | None = None

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


def upsample(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling that extrapolates linearly past the outer pixel centres.

    Plain resizing holds the last half pixel constant; a background rising towards the film
    edge would then sit below the film there and leave a false band along the edge.
    """
    if img.shape == shape:
        return img.astype(np.float32)
    h, w = img.shape
    pad = np.pad(img.astype(np.float32), 1, mode="reflect", reflect_type="odd")
    fr, fc = shape[0] / h, shape[1] / w
    big = cv2.resize(pad, (int(round((w + 2) * fc)), int(round((h + 2) * fr))),
                     interpolation=cv2.INTER_LINEAR)
    r0, c0 = int(round(fr)), int(round(fc))
    out = big[r0:r0 + shape[0], c0:c0 + shape[1]]
    if out.shape != shape:  # rounding: fall back to a plain resize
        return _resize(img.astype(np.float32), shape, cv2.INTER_LINEAR)
    return out


def _mask_resize(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return _resize(mask.astype(np.uint8), shape, cv2.INTER_NEAREST).astype(bool)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    return ndi.binary_fill_holes(mask)


def find_air(coarse: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Air (direct exposure) on the reduced film and its level.

    Candidate splits come from Otsu's threshold applied repeatedly to the darker class
    (air | soft tissue | bone films need two). A candidate dark region is air when it holds
    1-90 % of the ``valid`` pixels and is smooth: its median local standard deviation (3 x 3)
    is under half that of the rest, as direct exposure carries noise but no anatomy. The
    tightest accepted split wins (soft tissue can be smooth next to textured bone). The returned mask cuts a tenth of the way from the air level
    to the tissue level (thin tissue at the skin is body). Without air the mask is empty and
    the level is the 0.5th percentile of the valid pixels.
    """
    if valid is None:
        valid = np.ones(coarse.shape, bool)
    c = coarse.astype(np.float32)
    v = c[valid]
    if v.size == 0:
        return np.zeros(coarse.shape, bool), float(np.percentile(coarse, 0.5))
    lo = float(np.percentile(v, 0.5))
    sub = v[:: max(1, v.size // 60000)]
    candidates: list[float] = []
    cur = sub
    for _ in range(3):
        if cur.size < 16 or float(cur.max()) <= float(cur.min()):
            break
        t = float(filters.threshold_otsu(cur))
        candidates.append(t)
        cur = cur[cur <= t]
    if not candidates:
        return np.zeros(coarse.shape, bool), lo
    mean = cv2.blur(c, (3, 3))
    lstd = np.sqrt(np.maximum(cv2.blur(c * c, (3, 3)) - mean * mean, 0.0))
    n_valid = int(valid.sum())
    for t in reversed(candidates):  # tightest first: the darkest smooth class is the air
        dark = (c <= t) & valid
        frac = dark.sum() / n_valid
        if not 0.01 <= frac <= 0.9:
            continue
        rest = valid & ~dark
        if float(np.median(lstd[dark])) >= 0.5 * float(np.median(lstd[rest])):
            continue
        air_level = float(np.median(c[dark]))
        tissue_level = float(np.median(c[rest]))
        cut = air_level + 0.1 * (tissue_level - air_level)
        air = (c <= cut) & valid
        return air, float(np.median(c[air]))
    return np.zeros(coarse.shape, bool), lo


def find_collimation(coarse: np.ndarray, ws: float, params: SegmentParams) -> np.ndarray:
    """Collimated borders on the reduced film: bright bands beyond a straight edge.

    For each film side, the strongest bright-to-dark drop (over 2 mm, going inwards) within
    ``collimation_max_depth_mm`` of the edge is found in every column (row); a straight line
    is fitted robustly through these points. The side counts as collimated when the line is
    supported along at least a quarter of the side and the band beyond it is uniform
    (which a limb crossing the film edge is not). Returns a bool mask (plus
    ``collimation_margin_mm`` for the penumbra).
    """
    rows, cols = coarse.shape
    mask = np.zeros(coarse.shape, bool)
    p1, p99 = np.percentile(coarse[:: max(1, rows // 200), :: max(1, cols // 200)], [1, 99])
    span = float(p99 - p1)
    if span <= 0:
        return mask
    k = max(1, int(round(2.0 / ws)))
    margin = params.collimation_margin_mm / ws
    views = [
        (coarse, lambda m: m),
        (coarse[::-1], lambda m: m[::-1]),
        (coarse.T, lambda m: m.T),
        (coarse.T[::-1], lambda m: m[::-1].T),
    ]
    for a, back in views:
        n_r, n_c = a.shape
        depth = min(int(round(params.collimation_max_depth_mm / ws)), int(0.45 * n_r))
        if depth < 2 or n_r <= depth + k:
            continue
        drop = a[:depth] - a[k:depth + k]
        r_best = drop.argmax(axis=0)
        g = drop[r_best, np.arange(n_c)]
        ok = g >= 0.15 * span
        if ok.mean() < 0.25:
            continue
        x = np.arange(n_c)[ok].astype(np.float64)
        y = r_best[ok].astype(np.float64) + k / 2.0
        keep = np.ones(x.size, bool)
        for _ in range(4):
            if keep.sum() < 2:
                break
            coef = np.polyfit(x[keep], y[keep], 1)
            resid = np.abs(y - np.polyval(coef, x))
            tol = max(2.0, 3.0 * float(np.median(resid[keep])))
            keep = resid <= tol
        if keep.sum() < 0.25 * n_c:
            continue
        edge = np.polyval(coef, np.arange(n_c))
        # The band beyond the line must be uniform along the side.
        probe = np.clip(np.round(edge - k).astype(int), 0, n_r - 1)
        outside_vals = a[probe, np.arange(n_c)]
        if np.median(np.abs(outside_vals - np.median(outside_vals))) > 0.25 * float(np.median(g[ok])):
            continue
        # ... and the whole band between the film edge and the line must be brighter than
        # the strip just inside it (a lesion's edge near the film edge is not a collimator).
        rows_idx = np.arange(n_r)[:, None]
        band = rows_idx < (edge - k)[None, :]
        inner = (rows_idx > (edge + k)[None, :]) & (rows_idx <= (edge + 4 * k)[None, :])
        if not band.any() or not inner.any():
            continue
        if float(np.median(a[band])) - float(np.median(a[inner])) < 0.5 * float(np.median(g[ok])):
            continue
        side = rows_idx <= (edge + margin)[None, :]
        mask |= back(side)
    return mask


def find_saturated_markers(px: np.ndarray, spacing: float, min_area_mm2: float,
                           bits_stored: int | None = None) -> np.ndarray:
    """Lead markers: plateaus at the film's saturation value away from the film edge.

    Saturation is the top of the stored range (``2**bits_stored - 1``); without
    ``bits_stored`` the film's maximum counts only when it is such a value (255, 1023, ...).

    A lead letter stops primary and scatter alike, so it saturates the film; whether it lies
    in the air or over the body, its whole letter block (bounding box of each saturated
    component of at least ``min_area_mm2``) is returned. Saturated areas touching the film
    edge are collimation, not markers. Films without such a plateau give an empty mask.
    """
    mask = np.zeros(px.shape, bool)
    if min_area_mm2 <= 0:
        return mask
    top = float(px.max())
    full = 2.0 ** bits_stored - 1 if bits_stored else None
    if full is not None and top < full:
        return mask
    if full is None and (top < 255 or not float(top + 1).is_integer()
                         or int(top + 1) & int(top) != 0):
        return mask
    sat = (px >= top).astype(np.uint8)
    min_px = min_area_mm2 / (spacing * spacing)
    if sat.sum() < min_px:
        return mask
    # Labelled on the saturated pixels' bounding box (usually a letter, not the whole film).
    box = _box(sat.view(bool))
    assert box is not None  # sat.sum() >= min_px > 0
    br, bc = box[0].start, box[1].start
    n, _, stats, _ = cv2.connectedComponentsWithStats(np.ascontiguousarray(sat[box]), connectivity=8)
    rows, cols = px.shape
    for i in range(1, n):
        c0, r0, w, h, area = (int(v) for v in stats[i])
        r0, c0 = r0 + br, c0 + bc
        if area < min_px or r0 == 0 or c0 == 0 or r0 + h >= rows or c0 + w >= cols:
            continue
        mask[r0:r0 + h, c0:c0 + w] = True
    return mask


def _slope(img: np.ndarray, ws: float) -> np.ndarray:
    """Gradient magnitude of ``img`` per mm (Sobel; ``ws`` mm per pixel)."""
    gr = cv2.Sobel(img.astype(np.float32), cv2.CV_32F, 0, 1, ksize=3) / (8.0 * ws)
    gc = cv2.Sobel(img.astype(np.float32), cv2.CV_32F, 1, 0, ksize=3) / (8.0 * ws)
    return np.hypot(gr, gc)


def _sharp_edged(regions: np.ndarray, grad: np.ndarray, excess: np.ndarray, ws: float,
                 edge_mm: float, min_area_px: int = 0) -> np.ndarray:
    """Keep the components of ``regions`` whose outline is a sharp step (bone's cortex).

    ``grad`` is the film's slope per mm (:func:`_slope`).

    A rounded limb also rises over a coarse opening in its middle, but smoothly: there the
    steepest slope near the outline (90th percentile within 2 mm) is far below the region's
    median ``excess`` per ``edge_mm``, while a bone's cortex climbs it within a millimetre or two.
    Components under ``min_area_px`` are dropped unexamined (a later opening removes them).
    """
    n, lab, stats, _ = cv2.connectedComponentsWithStats(regions.astype(np.uint8), connectivity=8)
    if n <= 1:
        return regions
    k = disc(2 * 2.0 / ws + 1)
    keep = np.zeros(n, bool)
    rows, cols = lab.shape
    pad = max(k.shape)
    for i in range(1, n):
        if stats[i, cv2.CC_STAT_AREA] < min_area_px:
            continue
        # Each component within its bounding box plus the disc's reach (same band and values
        # as on the whole grid; hundreds of small components made whole-grid morphology slow).
        c0, r0, w, h = stats[i, :4]
        win = (slice(max(0, r0 - pad), min(rows, r0 + h + pad)),
               slice(max(0, c0 - pad), min(cols, c0 + w + pad)))
        comp = (lab[win] == i).astype(np.uint8)
        band = (cv2.dilate(comp, k) > 0) & ~(cv2.erode(comp, k) > 0)
        if not band.any():
            continue
        steep = float(np.percentile(grad[win][band], 90))
        height = float(np.median(excess[win][comp > 0]))
        keep[i] = steep * edge_mm >= height
    return keep[lab]


def _axis_angle(mask: np.ndarray) -> float | None:
    """Angle (``line_kernel`` convention) of the principal axis of ``mask``'s pixels, or None
    when it has fewer than 3."""
    rr, cc = np.nonzero(mask)
    if rr.size < 3:
        return None
    cov = np.cov(np.stack([rr, cc]).astype(np.float64))
    evals, evecs = np.linalg.eigh(cov)
    dr, dc = evecs[:, int(np.argmax(evals))]
    return math.atan2(dr, dc)


def bridge_along_axis(mask: np.ndarray, length_px: float) -> np.ndarray:
    """Close ``mask`` with a line of ``length_px`` along its principal axis.

    Bones run along the limb: where a stretch of a shaft is not recognised (a narrow waist,
    a faint stretch), the pieces above and below are collinear and the gap between them,
    shorter than ``length_px``, is bone too. Parallel bones are not joined (the line runs
    along them, not across).
    """
    angle = _axis_angle(mask)
    if angle is None or length_px < 2:
        return mask
    kernel = line_kernel(length_px, angle)
    pad = int(math.ceil(length_px / 2)) + 1
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    closed = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, kernel)
    return mask | closed[pad:-pad, pad:-pad].astype(bool)


def between_pieces(gap: np.ndarray, bone: np.ndarray) -> np.ndarray:
    """The components of ``gap`` that touch two or more separate pieces of ``bone``
    (8-connectivity).

    Closing a bone mask along its axis also fills the hollow beside a shaft between its two
    flared ends; that hollow touches one piece of bone only and is soft tissue, where a grown
    lesion may be as wide as a bone. A stretch of shaft that was not recognised lies between
    two pieces.
    """
    out = np.zeros(gap.shape, bool)
    if not gap.any():
        return out
    bone_lab, n_bone = ndi.label(bone, structure=np.ones((3, 3), bool))
    if n_bone < 2:
        return out
    gap_lab, n_gap = ndi.label(gap, structure=np.ones((3, 3), bool))
    for k, sl in enumerate(ndi.find_objects(gap_lab), start=1):
        grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        piece = cv2.dilate((gap_lab[grown] == k).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        touched = np.unique(bone_lab[grown][piece])
        if np.count_nonzero(touched) >= 2:
            out[grown] |= gap_lab[grown] == k
    return out


def extend_along_axis(mask: np.ndarray, candidates: np.ndarray, length_px: float,
                      width_px: float) -> np.ndarray:
    """Grow ``mask`` from its ends into ``candidates``, along its principal axis.

    A bone recognised over part of its length (its end towards the film edge rises less over
    the coarse opening, e.g. beside the limb's thick centre) continues in line with it: on
    every line along the axis, the mask's first and last ``width_px`` are swept up to
    ``length_px`` along it; candidates there, opened by a disc ``width_px`` across (a lesion
    near a bone's end is narrower and stays out) and touching the mask, are added.
    A flared end's shoulder is an end too: soft tissue beside the shaft, in line with the
    flare, is taken for bone when it rises enough and is at least ``width_px`` wide.
    """
    angle = _axis_angle(mask)
    if angle is None or length_px < 2:
        return mask
    dr, dc = math.sin(angle), math.cos(angle)
    rr, cc = np.nonzero(mask)
    t = rr * dr + cc * dc  # position along the axis
    # Ends per line along the axis (one per pixel across it), not per component: two bones
    # side by side often touch, and one's end is then in the middle of the pair's extent.
    across = np.round(cc * dr - rr * dc).astype(np.int64)
    across -= across.min()
    t_min = np.full(int(across.max()) + 1, np.inf)
    t_max = np.full(int(across.max()) + 1, -np.inf)
    np.minimum.at(t_min, across, t)
    np.maximum.at(t_max, across, t)
    cap = (t <= t_min[across] + width_px) | (t >= t_max[across] - width_px)
    ends = np.zeros(mask.shape, np.uint8)
    ends[rr[cap], cc[cap]] = 1
    corridor = cv2.dilate(ends, line_kernel(2 * length_px, angle)) > 0
    grow = corridor & candidates & ~mask
    grow = cv2.morphologyEx(grow.astype(np.uint8), cv2.MORPH_OPEN, disc(width_px)).astype(bool)
    return _hysteresis(grow | mask, mask)


def find_body(coarse: np.ndarray, tissue: np.ndarray, ws: float,
              params: SegmentParams) -> tuple[np.ndarray, np.ndarray]:
    """Split the non-air, non-collimation pixels into body and small separate objects.

    The body is every connected component of ``tissue`` at least 5 % of the largest and at
    least ``body_min_area_mm2``; smaller separate objects (lead markers, burned-in text,
    dust) are returned as the marker mask. Holes in the body are filled.
    """
    lab, n = ndi.label(tissue)
    if n == 0:
        return np.ones(coarse.shape, bool), np.zeros(coarse.shape, bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    keep = (sizes >= 0.05 * sizes.max()) & (sizes * ws * ws >= params.body_min_area_mm2)
    keep[0] = False
    if not keep.any():
        keep = sizes == sizes.max()
    body = _fill_holes(keep[lab])
    small = tissue & ~body
    if params.body_margin_mm > 0:
        grow = disc(2 * params.body_margin_mm / ws + 1)
        near_small = cv2.dilate(small.astype(np.uint8), grow).astype(bool)
        body = (cv2.dilate(body.astype(np.uint8), grow).astype(bool) & ~near_small) | body
    return body, small


def _nanmedian_filter(a: np.ndarray, n: int) -> np.ndarray:
    """NaN-ignoring n x n median filter with edge replication.

    Same values as ``ndi.generic_filter(a, np.nanmedian, size=n, mode="nearest")`` (including
    its window placement for even ``n``), but vectorised: one call instead of one Python call
    per pixel.
    """
    if n <= 1:
        return a
    before = n // 2
    padded = np.pad(a, ((before, n - 1 - before), (before, n - 1 - before)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (n, n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows -> NaN
        return np.nanmedian(windows.reshape(a.shape[0], a.shape[1], n * n), axis=2)


def _box(mask: np.ndarray, pad: int = 0) -> tuple[slice, slice] | None:
    """(row, col) slices of the bounding box of ``mask``'s non-zero pixels grown by ``pad``
    (clipped to the array), or None when there are none.

    Lesion masks cover a small part of a film: labelling and morphology on this box give the
    same result as on the whole film, at a fraction of the cost.
    """
    m = mask.view(np.uint8) if mask.dtype == bool else mask
    c0, r0, w, h = cv2.boundingRect(np.ascontiguousarray(m))
    if w == 0 or h == 0:
        return None
    rows, cols = mask.shape
    return (slice(max(0, r0 - pad), min(rows, r0 + h + pad)),
            slice(max(0, c0 - pad), min(cols, c0 + w + pad)))


def _union_box(boxes: list[tuple[slice, slice]]) -> tuple[slice, slice]:
    """The smallest (row, col) box holding all ``boxes``."""
    return (slice(min(b[0].start for b in boxes), max(b[0].stop for b in boxes)),
            slice(min(b[1].start for b in boxes), max(b[1].stop for b in boxes)))


def _dilate_sparse(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Binary dilation of a sparse boolean ``mask`` by ``kernel``, computed on its bounding box."""
    out = np.zeros(mask.shape, bool)
    box = _box(mask, pad=max(kernel.shape))
    if box is not None:
        out[box] = cv2.dilate(mask[box].astype(np.uint8), kernel) > 0
    return out


def local_sigma(flat: np.ndarray, body: np.ndarray, spacing: float, noise_mm: float,
                out_shape: tuple[int, int], block_mm: float = 5.0,
                fine_mm: float = 0.0, max_factor: float = 0.0) -> tuple[np.ndarray, float]:
    """Local robust noise sigma of ``flat`` on a grid of ``out_shape``.

    Per block of ``block_mm``: 1.4826 × median |value| over at most ~64
    samples; blocks mostly outside ``body`` take the body-wide value; then a median filter
    over ``noise_mm`` (ridges and lesions occupy few blocks) and a resize. Returns
    (sigma map, body-wide sigma).
    """
    rows, cols = flat.shape
    b = max(2, int(round(block_mm / spacing)))
    st = max(1, b // 8)
    nbr, nbc = rows // b, cols // b
    if nbr < 1 or nbc < 1:
        sigma_g = robust_sigma(flat[body]) if body.any() else robust_sigma(flat)
        sigma_g = sigma_g if sigma_g > 0 else 1e-6
        return np.full(out_shape, sigma_g, np.float32), sigma_g
    blk = flat[: nbr * b, : nbc * b].reshape(nbr, b, nbc, b)[:, ::st, :, ::st]
    blk = blk.transpose(0, 2, 1, 3).reshape(nbr, nbc, -1)
    # ``flat`` is already locally zero-centred: deviations are taken from 0, not from the
    # block median, so variation at scales near the block size still counts.
    sig = 1.4826 * np.median(np.abs(blk), axis=2)
    bb = body[: nbr * b, : nbc * b].reshape(nbr, b, nbc, b)[:, ::st, :, ::st]
    inside = bb.mean(axis=(1, 3)) >= 0.5
    sigma_g = float(np.median(sig[inside])) if inside.any() else float(np.median(sig))
    sigma_g = sigma_g if sigma_g > 0 else 1e-6
    # Blocks mostly outside the mask carry no information: NaN, skipped by the median
    # filters (nan-aware, on the small block grid), filled with the body-wide value at the end.
    sig = np.where(inside, sig, np.nan).astype(np.float64)

    nanmedian_filter = _nanmedian_filter

    size = max(1, int(round(noise_mm / block_mm)))
    raw = sig
    sig = nanmedian_filter(sig, size)
    fine = max(1, int(round(fine_mm / block_mm))) if fine_mm > 0 else 0
    if fine:
        # Strongly textured patches smaller than ``noise_mm`` (a trabecular metaphysis) keep
        # their own, higher sigma.
        sig = np.fmax(sig, nanmedian_filter(raw, fine))
    sig = np.where(np.isfinite(sig), sig, sigma_g).astype(np.float32)
    sig = np.maximum(sig, 0.25 * sigma_g)
    if max_factor > 0:
        # Residual cortical lines cross most blocks over a bone shaft and would raise its
        # sigma far above the real noise there: cap at ``max_factor`` × the body-wide value.
        sig = np.minimum(sig, max_factor * sigma_g)
    return _resize(sig, out_shape, cv2.INTER_LINEAR).astype(np.float32), sigma_g


def line_like(img: np.ndarray, sigma_px: float, ratio: float) -> np.ndarray:
    """Bright line pixels: Hessian (Gaussian ``sigma_px``) with one strongly negative
    eigenvalue and the other within ``ratio`` × its magnitude (blobs have two)."""
    g = cv2.GaussianBlur(img.astype(np.float32), (0, 0), max(sigma_px, 0.5))
    hrr = cv2.Sobel(g, cv2.CV_32F, 0, 2, ksize=3)
    hcc = cv2.Sobel(g, cv2.CV_32F, 2, 0, ksize=3)
    hrc = cv2.Sobel(g, cv2.CV_32F, 1, 1, ksize=3)
    tr = 0.5 * (hrr + hcc)
    dd = np.sqrt(0.25 * (hrr - hcc) ** 2 + hrc * hrc)
    l1, l2 = tr - dd, tr + dd  # l1 <= l2
    return (l1 < 0) & (np.abs(l2) <= ratio * np.abs(l1))


def _line_like_near(img: np.ndarray, sigma_px: float, ratio: float, near: np.ndarray) -> np.ndarray:
    """``line_like(img, sigma_px, ratio) & near``, computed on the bounding box of ``near``
    grown by the filters' reach: same values there, and the Hessian of a whole film (about
    ten full-size float32 arrays) is not needed."""
    out = np.zeros(img.shape, bool)
    reach = int(math.ceil(4 * max(sigma_px, 0.5))) + 4  # Gaussian radius (4 sigma) + Sobel
    box = _box(near, pad=reach)
    if box is None:
        return out
    # In strips of rows (each with ``reach`` rows of real context above and below): the same
    # values, with a few strip-sized temporaries instead of ten box-sized ones.
    top, bottom, cs = box[0].start, box[0].stop, box[1]
    strip = 512
    for r in range(top, bottom, strip):
        r1 = min(r + strip, bottom)
        a, b = max(top, r - reach), min(bottom, r1 + reach)
        ll = line_like(img[a:b, cs], sigma_px, ratio)
        out[r:r1, cs] = ll[r - a:r1 - a] & near[r:r1, cs]
    return out


def max_pool(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``img`` reduced to ``shape`` keeping each block's maximum (a thin bright line keeps its
    height, which area averaging would spread over the block)."""
    k = max(1, int(math.ceil(max(img.shape[0] / shape[0], img.shape[1] / shape[1]))))
    if k > 1:
        # Anchored at the top-left: pixel (r, c) holds the maximum of the k x k block starting
        # there, which is where nearest-neighbour resizing samples each block.
        img = cv2.dilate(img.astype(np.float32, copy=False), np.ones((k, k), np.uint8),
                         anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
    return _resize(img, shape, cv2.INTER_NEAREST)


def cortex_bumps(flat: np.ndarray, lines: np.ndarray, near_c: np.ndarray, thr_c: np.ndarray,
                 length_c: float, angle_c: float, min_area_px: float) -> np.ndarray:
    """Pixels of the cortical ``lines`` that stand out of the line as a lesion does.

    A plaque lying along the cortex joins the cortical line and is line-like itself. The
    line's own level is a line opening of ``length_c`` (longer than a plaque) of the
    max-pooled flattened film, within ``near_c``, on the working grid of ``near_c`` and
    ``thr_c`` (``angle_c``: the line end's step between orientations, working pixels). Line
    pixels at least the local threshold ``thr_c`` above that level, in connected pieces of at
    least ``min_area_px`` (single bright spots along a cortex are noise or trabeculae), are
    returned.
    """
    out = np.zeros(lines.shape, bool)
    wshape = near_c.shape
    box = _box(near_c, pad=2)
    if box is None or not lines.any():
        return out
    base_c = np.zeros(wshape, np.float32)
    n_angles = max(8, int(math.ceil(math.pi * length_c / angle_c)))
    base_c[box] = line_open_max(max_pool(flat, wshape)[box], near_c[box], length_c, n_angles)
    rr, cc = np.nonzero(lines)
    keep = flat[rr, cc] >= _bilinear_at(base_c + thr_c, rr, cc, lines.shape)
    out[rr[keep], cc[keep]] = True
    if min_area_px > 1 and keep.any():
        pbox = _box(out)
        assert pbox is not None
        n, lab, stats, _ = cv2.connectedComponentsWithStats(out[pbox].astype(np.uint8),
                                                            connectivity=8)
        big = stats[:, cv2.CC_STAT_AREA] >= min_area_px
        big[0] = False
        out[pbox] = big[lab]
    return out


def line_open_max(img: np.ndarray, mask: np.ndarray, length_px: float,
                  n_angles: int) -> np.ndarray:
    """Maximum over ``n_angles`` orientations of masked openings with a line of ``length_px``.

    Keeps every structure that contains a straight segment of that length (cortical edges,
    skin folds, bone shafts) in the background and removes shorter ones (the lesions). Each
    orientation rotates the image (and mask) so the line is horizontal, where OpenCV's
    rectangular morphology is fast, and rotates the result back.
    """
    rows, cols = img.shape
    n = max(3, int(round(length_px)))
    kernel = np.ones((1, n), np.uint8)
    diag = int(math.ceil(math.hypot(rows, cols))) + 2
    out = np.full(img.shape, -np.inf, np.float32)
    centre = ((cols - 1) / 2.0, (rows - 1) / 2.0)
    big = 3e38
    for angle in (180.0 * i / n_angles for i in range(n_angles)):
        fwd = cv2.getRotationMatrix2D(centre, angle, 1.0)
        fwd[0, 2] += (diag - cols) / 2.0
        fwd[1, 2] += (diag - rows) / 2.0
        rot = cv2.warpAffine(img, fwd, (diag, diag), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
        rmask = cv2.warpAffine(mask.astype(np.uint8), fwd, (diag, diag), flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
        ero = cv2.erode(np.where(rmask, rot, big).astype(np.float32), kernel,
                        borderType=cv2.BORDER_CONSTANT, borderValue=big)
        dil = cv2.dilate(np.where(rmask, ero, -big).astype(np.float32), kernel,
                         borderType=cv2.BORDER_CONSTANT, borderValue=-big)
        dil = np.where(rmask, dil, -big).astype(np.float32)
        back = cv2.warpAffine(dil, fwd, (cols, rows), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=-big)
        np.maximum(out, back, out=out)
    return np.where(mask, np.minimum(np.maximum(out, -big), img), img).astype(np.float32)


def masked_open(img: np.ndarray, mask: np.ndarray, kernel: np.ndarray,
                hang: bool = True) -> np.ndarray:
    """Grey opening that only looks at pixels inside ``mask``.

    Outside pixels count as +inf for the erosion and -inf for the dilation, so the
    structuring element may hang over the body edge: a tissue profile falling towards the
    skin is followed exactly instead of being cut (which would leave a ridge along the skin).
    Outside the mask the input is returned.
    """
    img = img.astype(np.float32, copy=False)
    # Only pixels within a disc of the mask matter (src is +inf everywhere else, and the crop
    # keeps the film's own edges where it reaches them): work on that box.
    box = _box(mask, pad=max(kernel.shape))
    if box is None:
        return img.copy()
    if box[0].stop - box[0].start < img.shape[0] or box[1].stop - box[1].start < img.shape[1]:
        out = img.copy()
        out[box] = masked_open(img[box], mask[box], kernel, hang)
        return out
    big = np.float32(3e38)
    # Beyond the film edge the film is taken to continue unchanged (padding by replication,
    # so discs may be centred outside): a tissue profile rising towards the edge is not cut.
    pr, pc = kernel.shape[0] // 2 + 1, kernel.shape[1] // 2 + 1
    src = cv2.copyMakeBorder(np.where(mask, img, big).astype(np.float32), pr, pr, pc, pc,
                             cv2.BORDER_REPLICATE)
    ero = cv2.erode(src, kernel, borderType=cv2.BORDER_REPLICATE)
    # Every disc that touches the mask counts (its erosion is finite), also one centred
    # outside: that is what lets it hang over the edge.
    centres = ero < 0.5 * big
    if not hang:  # only discs centred in the mask (or beyond the film edge)
        inner = cv2.copyMakeBorder(mask.astype(np.uint8), pr, pr, pc, pc, cv2.BORDER_REPLICATE)
        centres &= inner > 0
    dil = cv2.dilate(np.where(centres, ero, -big).astype(np.float32), kernel,
                     borderType=cv2.BORDER_REPLICATE)
    dil = dil[pr:pr + img.shape[0], pc:pc + img.shape[1]]
    return np.where(mask, dil, img).astype(np.float32)


def masked_blur_linear(img: np.ndarray, mask: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian-weighted local *linear* fit using only pixels inside ``mask``.

    Plain normalised convolution is biased towards the interior next to the mask edge, which
    on the steep tissue slope under the skin puts the background too high exactly where
    subcutaneous lesions sit. A first-order fit reproduces a slope up to the edge. Pixels
    whose neighbourhood is degenerate fall back to the plain normalised blur.
    """
    rows, cols = img.shape
    w = mask.astype(np.float64)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    yy -= rows / 2.0
    xx -= cols / 2.0
    z = np.where(mask, img, 0.0).astype(np.float64)

    def g(a: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(a, (0, 0), sigma_px, borderType=cv2.BORDER_CONSTANT)

    m0, mx, my = g(w), g(w * xx), g(w * yy)
    mxx, myy, mxy = g(w * xx * xx), g(w * yy * yy), g(w * xx * yy)
    mz, mzx, mzy = g(w * z), g(w * z * xx), g(w * z * yy)
    # Moments about each pixel (u = x - x_p, v = y - y_p).
    su, sv = mx - xx * m0, my - yy * m0
    suu = mxx - 2 * xx * mx + xx * xx * m0
    svv = myy - 2 * yy * my + yy * yy * m0
    suv = mxy - xx * my - yy * mx + xx * yy * m0
    szu, szv = mzx - xx * mz, mzy - yy * mz
    # Cramer's rule for the constant term of the 3 x 3 normal equations, vectorised.
    det = (m0 * (suu * svv - suv * suv) - su * (su * svv - suv * sv)
           + sv * (su * suv - suu * sv))
    num = (mz * (suu * svv - suv * suv) - su * (szu * svv - suv * szv)
           + sv * (szu * suv - suu * szv))
    ok = (m0 > 1e-3) & (np.abs(det) > 1e-6 * np.maximum(m0, 1e-12) ** 3 * sigma_px ** 4)
    out = np.where(m0 > 1e-6, mz / np.maximum(m0, 1e-12), img)
    out = np.where(ok, num / np.where(ok, det, 1.0), out)
    return np.where(mask, out, img).astype(np.float32)


def lower_envelope(img: np.ndarray, mask: np.ndarray, sigma_px: float, clip: float,
                   n_iter: int = 4) -> np.ndarray:
    """Smooth background under positive bumps: iterated clipped, masked Gaussian smoothing.

    Each pass clips the image at the current estimate + ``clip`` and smooths again, so
    lesions (bumps above the tissue) drop out while slopes (a limb thinning towards the
    skin) are followed, which a flat opening cannot do under a lesion on a slope.
    """
    b = masked_blur_linear(img, mask, sigma_px)
    for _ in range(n_iter):
        b = masked_blur_linear(np.minimum(img, b + clip), mask, sigma_px)
    return b


def _masked_blur(img: np.ndarray, mask: np.ndarray, sigma_px: float,
                 outside: float | None = None) -> np.ndarray:
    """Gaussian blur using only pixels inside ``mask`` (normalised convolution)."""
    w = mask.astype(np.float32)
    num = cv2.GaussianBlur(np.where(mask, img, 0).astype(np.float32), (0, 0), sigma_px)
    den = cv2.GaussianBlur(w, (0, 0), sigma_px)
    out = num / np.maximum(den, 1e-6)
    fill = img if outside is None else np.full_like(img, outside)
    return np.where(mask & (den > 1e-3), out, fill).astype(np.float32)


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


def segment(film: Film, params: SegmentParams = SegmentParams(), *,
            bone_hint: np.ndarray | None = None) -> Segmentation:
    """Find calcified lesions on a film.

    Parameters
    ----------
    film
        The film (brighter = denser).
    params
        Segmentation parameters; every size is in mm. Films without spacing are processed
        with ``params.assumed_spacing_mm`` as scale (and say so in the log).
    bone_hint
        Optional bool mask on the film's grid of bone known from elsewhere (another film of
        the same limb, registered): added to the bone found here, within the tissue.

    Returns
    -------
    Segmentation
        Labels (raster order), lesion kinds, thresholds used, flattened film, background,
        and the masks of what was excluded.
    """
    if bone_hint is not None and np.shape(bone_hint) != film.shape:
        raise ValueError(f"bone_hint is {np.shape(bone_hint)} but the film is {film.shape}")
    px = film.pixels
    rows, cols = film.shape
    spacing = film.mean_spacing_mm
    if spacing is None:
        spacing = params.assumed_spacing_mm
        logger.info("film %s has no pixel spacing: scales assume %.3g mm per pixel",
                    film.name, spacing)
    sp = film.spacing_mm if film.spacing_mm is not None else (spacing, spacing)  # (row, col)

    # 1. working grid ------------------------------------------------------------------
    factor = max(1.0, params.work_spacing_mm / spacing)
    wshape = (max(8, int(round(rows / factor))), max(8, int(round(cols / factor))))
    wshape = (min(wshape[0], rows), min(wshape[1], cols))
    ws = spacing * math.sqrt((rows / wshape[0]) * (cols / wshape[1]))  # working mm/px
    coarse = _resize(px, wshape, cv2.INTER_AREA)

    # 2. exclusions: collimation, air, markers/text, body -------------------------------
    coll_c = find_collimation(coarse, ws, params)
    air_c, air_level = find_air(coarse, ~coll_c)
    body_c, marker_c = find_body(coarse, ~coll_c & ~air_c, ws, params)
    body_c &= ~coll_c
    collimation = _mask_resize(coll_c, (rows, cols))
    marker = _mask_resize(marker_c, (rows, cols)) | find_saturated_markers(
        px, spacing, params.marker_min_area_mm2, film.metadata.bits_stored)
    if marker.any() and params.marker_margin_mm > 0:
        marker = _dilate_sparse(marker, disc(2 * params.marker_margin_mm / spacing + 1))

    # 3. background ----------------------------------------------------------------------
    # Openings look at tissue only (not the body mask's margin into air): structuring
    # elements may hang over the skin line instead of dipping into the air.
    tis_c = body_c & ~air_c if (body_c & ~air_c).any() else body_c
    # Denoise the working grid first (edge-preserving, range ~3 noise sigmas): an opening of a
    # noisy image follows the noise minima, which would skew the flattened film positive.
    d = np.diff(coarse, axis=1)[body_c[:, 1:] & body_c[:, :-1]]
    sigma_cw = robust_sigma(d) / math.sqrt(2.0) if d.size else 0.0
    denoised = coarse
    if sigma_cw > 0:
        denoised = cv2.bilateralFilter(coarse.astype(np.float32), -1, 3.0 * sigma_cw,
                                       max(1.0, params.denoise_mm / ws))
    # Lower envelope of the tissue (follows slopes; lesions clipped out), raised to the disc
    # opening (steps, convex shapes) and to line openings (long ridges: cortex).
    clip = params.envelope_clip * sigma_cw
    # The envelope is smooth (``envelope_mm`` >> 1 mm): compute it on a ~1 mm grid.
    fe = max(1, int(round(params.envelope_grid_mm / ws)))
    env_shape = (max(8, wshape[0] // fe), max(8, wshape[1] // fe))
    wse = ws * wshape[0] / env_shape[0]
    env_mask = _mask_resize(tis_c, env_shape)
    env = lower_envelope(_resize(denoised, env_shape, cv2.INTER_AREA), env_mask,
                         params.envelope_mm / wse, clip)
    bg_c = np.where(tis_c, upsample(env, wshape), coarse)
    if params.disc_background:
        op = masked_open(denoised, tis_c, disc(params.background_mm / ws), hang=False)
        bg_c = np.where(tis_c, np.maximum(bg_c, op), bg_c)
    # The coarse opening (bone detection only) runs on a grid of ~bone_scale_mm / 48: a disc
    # of ~48 pixels there instead of ~100 on the working grid (~10x less work).
    fb = max(1, int(round(params.bone_scale_mm / 48.0 / ws)))
    if fb > 1:
        soft_shape = (max(8, wshape[0] // fb), max(8, wshape[1] // fb))
        wsb = ws * wshape[0] / soft_shape[0]
        soft_small = masked_open(_resize(denoised, soft_shape, cv2.INTER_AREA),
                                 _mask_resize(tis_c, soft_shape), disc(params.bone_scale_mm / wsb))
        soft_c = np.where(tis_c, upsample(soft_small, wshape), denoised)
    else:
        soft_c = masked_open(denoised, tis_c, disc(params.bone_scale_mm / ws))
    tissue_c = np.maximum(soft_c - air_level, 1e-6)
    rel_c = (bg_c - soft_c) / tissue_c
    bone_c = (rel_c > params.bone_min_relative) & body_c
    if params.bone_edge_mm > 0 and bone_c.any():
        cand = bone_c
        excess_c = bg_c - soft_c
        slope_c = _slope(denoised, ws)  # once for every retry below
        # Smaller than the bone_min_width_mm disc: the opening below removes them anyway.
        min_px = int(np.count_nonzero(disc(params.bone_min_width_mm / ws))) if params.bone_min_width_mm > 0 else 0
        bone_c = _sharp_edged(cand, slope_c, excess_c, ws, params.bone_edge_mm, min_px)
        # A bone in the middle of a rounded limb merges with the limb's smoothly rising
        # centre into one candidate whose outline is partly smooth: retry what was rejected
        # at higher relative levels, where the bone (sharp-edged) separates from the limb.
        for level in (1.5, 2.0, 3.0):
            rest = cand & ~bone_c
            if not rest.any():
                break
            cand = rest & (rel_c > level * params.bone_min_relative)
            if not cand.any():
                break
            bone_c = bone_c | _sharp_edged(cand, slope_c, excess_c, ws, params.bone_edge_mm, min_px)
    if not air_c.any():
        # Bone is judged relative to the tissue's height above air; with no air on the film
        # there is no such reference, so no bone is marked (and no bone-specific rules apply).
        bone_c[:] = False
    bone_c = ndi.binary_opening(bone_c, iterations=1)
    if params.bone_min_width_mm > 0:
        # Bone is wide (a shaft is centimetres across): a dense plaque or nodule raises the
        # background over the coarse opening too, but is narrower than this and must not
        # be taken for bone (its outline would count as cortex).
        bone_c = cv2.morphologyEx(bone_c.astype(np.uint8), cv2.MORPH_OPEN,
                                  disc(params.bone_min_width_mm / ws)).astype(bool)
    if params.bone_bridge_mm > 0 and bone_c.any():
        bone_c = bridge_along_axis(bone_c, params.bone_bridge_mm / ws) & tis_c
    if params.bone_extend_mm > 0 and bone_c.any():
        # Half a bone's width: the cap swept along the axis, and the opening of what it finds.
        half_w = max(1.0, 0.5 * params.bone_min_width_mm / ws)
        bone_c = extend_along_axis(
            bone_c, (rel_c > params.bone_extend_level * params.bone_min_relative) & tis_c,
            params.bone_extend_mm / ws, half_w)
    if bone_hint is not None:
        bone_c = bone_c | (_mask_resize(np.asarray(bone_hint, bool), wshape) & tis_c)
    # Within ``bone_margin_mm`` of bone: where the line openings and the cortex-line cut act.
    near_bone_c = cv2.dilate(bone_c.astype(np.uint8),
                             disc(2 * params.bone_margin_mm / ws + 1)).astype(bool)
    if params.ridge_line_mm > 0:
        # Long straight ridges (cortical edges) belong to the background: line openings at
        # ~1 mm resolution, in pi * L / ridge_angle_mm orientations (the line's end moves by
        # at most ~ridge_angle_mm / 2 between neighbours, less than a cortex is wide).
        f2 = max(1, int(round(1.0 / ws)))
        small_shape = (max(8, wshape[0] // f2), max(8, wshape[1] // f2))
        ws2 = ws * wshape[0] / small_shape[0]
        c2 = _resize(denoised, small_shape, cv2.INTER_AREA)
        b2 = _mask_resize(tis_c, small_shape)
        n_angles = max(8, int(math.ceil(math.pi * params.ridge_line_mm / params.ridge_angle_mm)))
        lo2 = line_open_max(c2, b2, params.ridge_line_mm / ws2, n_angles)
        lo_c = upsample(lo2, wshape)
        # Only along bone (cortex): in soft tissue long lines would also follow plaques
        # and the grain of the muscle.
        bg_c = np.where(near_bone_c & tis_c, np.maximum(bg_c, np.minimum(lo_c, coarse)), bg_c)
    # Residual on the working grid, before any smoothing: an opening keeps steps (skin line,
    # bone edges) exactly here, whereas the full-size residual shows a thin band along them
    # where the reduced background is too coarse. Lesions need support here too.
    resid_c = coarse - bg_c
    # Smooth the noise-minimum texture of the opening without blurring steps (skin line, bone
    # edges): an edge-preserving bilateral filter whose range is a few working-grid sigmas.
    rb = resid_c[tis_c]
    r_sig = robust_sigma(rb) if rb.size else 0.0
    if r_sig > 0:
        bg_c = np.where(tis_c, cv2.bilateralFilter(bg_c.astype(np.float32), -1, 3.0 * r_sig,
                                                    max(0.5, 1.0 / ws)), bg_c)

    # 4. flattened film ------------------------------------------------------------------
    sm = px
    if params.smooth_mm > 0 and params.smooth_mm / spacing >= 0.3:
        sm = cv2.GaussianBlur(px, (0, 0), params.smooth_mm / spacing)
    background = upsample(bg_c, (rows, cols))
    flat = (sm - background).astype(np.float32, copy=False)
    # The blurred copy (px stays with the film) and the full-size background (rebuilt at the
    # end, for the result) are not kept through the steps below: peak memory.
    del sm, background
    # Outside the body and not excluded otherwise (a result mask); ``body`` is what is examined.
    outside = ~_mask_resize(body_c, (rows, cols)) & ~collimation & ~marker
    body = ~outside & ~marker & ~collimation
    # The background is least certain within a few pixels of the film edge (the opening and
    # the upsampling both extrapolate there): leave a thin frame out.
    edge_px = int(math.ceil(params.film_edge_mm / spacing))
    if edge_px > 0:
        _set_frame(body, edge_px, False)

    # Bias of the opening (it sits under the noise and under convex tissue): remove the local
    # mean level of the clipped flattened film, estimated on the working grid.
    step = max(1, int(math.sqrt(flat.size / 2e5)))
    fb = flat[::step, ::step][body[::step, ::step]]
    sigma_g = robust_sigma(fb) if fb.size else 1.0
    sigma_g = sigma_g if sigma_g > 0 else 1e-6
    ksig = params.noise_mm / ws / 2
    flat_c = _resize(np.clip(flat, -3 * sigma_g, 3 * sigma_g), wshape, cv2.INTER_AREA)
    # Statistics come from tissue only: the body mask's margin into air has no anatomy and
    # would pull bias and noise estimates down near the skin.
    tissue_c = tis_c
    tissue = _mask_resize(tissue_c, (rows, cols)) & body
    bias_c = _masked_blur(flat_c, tissue_c, ksig, outside=0.0)
    flat -= upsample(bias_c, (rows, cols))

    # 5. local noise sigma: block-wise MAD of the flattened film (robust to lesions and
    # ridges), median-filtered over ``noise_mm`` and brought to the working grid.
    # Cortex band: within ``cortex_band_mm`` of the bone outline, inside or out.
    k_cb = disc(2 * params.cortex_band_mm / ws + 1)
    bone_u8 = bone_c.astype(np.uint8)
    bone_band = (cv2.dilate(bone_u8, k_cb) > 0) & ~(cv2.erode(bone_u8, k_cb) > 0)
    sig_src = tissue
    if params.sigma_skip_cortex and bone_band.any():
        # Residual cortical ridges would inflate the sigma of every block they cross.
        sig_src = tissue & ~_mask_resize(bone_band, (rows, cols))
    sig_c, sigma_g = local_sigma(flat, sig_src, spacing, params.noise_mm, wshape,
                                 fine_mm=params.noise_fine_mm,
                                 max_factor=params.noise_max_factor)
    del sig_src, tissue
    noise_sigma = float(np.median(sig_c[tissue_c])) if tissue_c.any() else sigma_g

    # 6. threshold + hysteresis ---------------------------------------------------------
    threshold_k: float | None = None
    prob_g: np.ndarray | None = None  # the pixel model's probability map (its grid), when on
    thr_c: np.ndarray | None = None  # the local threshold on the working grid (auto only)
    rule_c: np.ndarray | None = None  # the contrast unit of the hand rules (auto only)
    if params.method is ThresholdMethod.AUTO:
        threshold_k = params.k_sigma
        factor_c = np.where(bone_c, params.bone_factor, 1.0)
        thr_c = (sig_c * factor_c * params.k_sigma).astype(np.float32)
        rule_c = (sig_c * factor_c * params.rule_k_sigma).astype(np.float32)
        if params.pixel_min_prob > 0:
            # The pixel model rates the film now, before the rules label it: fewer full-size
            # maps are alive here than at step 9, which adds its regions (peak memory). Its
            # inputs are final: the same as segmentation_pixel_features of the result.
            prob_g = _rate_pixels(params.pixel_model, flat, thr_c / threshold_k,
                                  ~outside & ~collimation & ~marker,
                                  _mask_resize(bone_c, (rows, cols)) & body,
                                  upsample(bg_c + bias_c, (rows, cols)), noise_sigma, spacing)
        thr_map = _resize(thr_c, (rows, cols), cv2.INTER_LINEAR)
        if thr_map is thr_c:  # same grid: scaled in place below, so not the map kept in thr_c
            thr_map = thr_map.copy()
        high = flat >= thr_map
        thr_map *= np.float32(params.low_ratio)
        low = flat >= thr_map
        del thr_map  # labelling samples the working-grid map where it needs it
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
    del low  # full-size masks are freed as soon as they are dead: they set the peak memory
    # Components under min_area_mm2 are dropped here, not trimmed: every later step only
    # removes pixels, and labelling would drop them (at k_sigma 3 they are most components).
    grown = _trim_edges(grown, flat, params.edge_fraction, params.edge_mm / spacing,
                        min_px=params.min_area_mm2 / (sp[0] * sp[1]))
    # Trimming can cut a faint skirt off its seed: pieces without a seed are dropped.
    grown = _hysteresis(grown, high & grown)
    if params.line_sigma_mm > 0 and bone_c.any():
        # Residual cortical lines next to a lesion over bone: line-like pixels (Hessian: one
        # strongly negative curvature, the other near 0) near bone are cut out of the mask
        # so the lesion is not merged with the cortex into one long component.
        near_bone = _mask_resize(near_bone_c, (rows, cols))
        lines = _line_like_near(flat, params.line_sigma_mm / spacing, params.line_ratio, near_bone)
        if params.line_min_length_mm > 0:
            # Only long lines are cortex: a plaque is line-like too, but short.
            lbox = _box(lines)
            if lbox is not None:
                n_l, lab_l, st_l, _ = cv2.connectedComponentsWithStats(lines[lbox].astype(np.uint8),
                                                                       connectivity=8)
                diag = np.hypot(st_l[:, cv2.CC_STAT_WIDTH], st_l[:, cv2.CC_STAT_HEIGHT]) * spacing
                long_l = diag >= params.line_min_length_mm
                long_l[0] = False
                lines[lbox] = long_l[lab_l]
                del lab_l
        if params.line_baseline_mm > 0 and lines.any():
            thr_w = rule_c if rule_c is not None else np.full(wshape, threshold, np.float32)
            lines &= ~cortex_bumps(flat, lines, near_bone_c & tis_c, thr_w,
                                   params.line_baseline_mm / ws, params.ridge_angle_mm / ws,
                                   params.line_keep_min_mm2 / (spacing * spacing))
        grown &= ~lines
        del lines, near_bone
        grown = _hysteresis(grown, high & grown)
    if params.drop_edge_touching and grown.any():
        # Components reaching the film frame or a collimator edge are where the background is
        # extrapolated (bone ends cut by the collimator): they are left out.
        edge = outside | collimation | marker
        if edge_px > 0:
            _set_frame(edge, edge_px, True)
        touch = cv2.dilate(edge.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        del edge
        touch &= ~_mask_resize(air_c, (rows, cols))
        touching = _hysteresis(grown, touch & grown)
        grown = grown & ~touching
        if params.edge_open_mm > 0 and touching.any():
            # A lesion over bone merged with a cortical line that runs to the film edge:
            # an opening cuts the thin line; the pieces away from the edge stay.
            opened = _open_components(touching, disc(params.edge_open_mm / spacing))
            opened = _hysteresis(opened, high & opened)
            grown |= opened & ~_hysteresis(opened, touch & opened)
            del opened
        del touch, touching
    del high
    if params.gate_fraction > 0:
        grown = _mass_gate(grown, flat, resid_c, body_c, params.gate_fraction)
    if params.bone_bridge_mm > 0 and params.bone_min_width_mm > 0 and bone_c.any() and grown.any():
        # A stretch of shaft longer than the bridge, between two recognised pieces of bone,
        # is left in the flattened film as one wide component: a component with a part as
        # wide as bone (survives the ``bone_min_width_mm`` opening) lying in a gap of up to
        # twice the bridge along the bone axis, between two pieces, is that stretch.
        gap_c = between_pieces(bridge_along_axis(bone_c, 2 * params.bone_bridge_mm / ws) & ~bone_c, bone_c)
        if gap_c.any():
            g_c = _resize(grown.astype(np.float32), wshape, cv2.INTER_AREA) >= 0.5
            # Cracks along the trabecular texture must not split it below the width.
            g_c = _fill_holes(cv2.morphologyEx(g_c.astype(np.uint8), cv2.MORPH_CLOSE,
                                               disc(2 * 1.0 / ws + 1)).astype(bool))
            wide_c = cv2.morphologyEx(g_c.astype(np.uint8), cv2.MORPH_OPEN,
                                      disc(params.bone_min_width_mm / ws)).astype(bool) & gap_c
            if wide_c.any():
                grown = grown & ~_hysteresis(grown, grown & _mask_resize(wide_c, (rows, cols)))

    # 7. label, size filter, cortex ridges, classes ---------------------------------------
    bone_axis = _axis_angle(bone_c) if bone_c.any() else None
    labels, kinds, rejected = _label_and_classify(
        grown, film, spacing, params, _mask_resize(bone_band, (rows, cols)), flat, rule_c,
        bone_axis)
    del grown

    # 8. candidate scores -----------------------------------------------------------------
    features = component_features(labels, flat, sig_c, bone_c, tis_c, sp, bone_axis)
    scores: tuple[float, ...] = ()
    if params.min_score > 0 and kinds:
        p = predict_proba(load_model(params.score_model), features)
        keep = p >= params.min_score
        if not keep.all():
            labels, kinds = _keep_labels(labels, kinds, keep)
            features = features[keep]
        scores = tuple(float(v) for v in p[keep])
    bone = _mask_resize(bone_c, (rows, cols)) & body
    del body
    excluded = {
        "outside_body": outside,
        "collimation": collimation,
        "marker": marker,
        "bone": bone,
    }
    # One full-size upsampling of the summed working-grid surfaces (upsampling is linear: the
    # background the film was flattened against, to float rounding); kept as it comes (a view).
    background = upsample(bg_c + bias_c, (rows, cols))
    seg = Segmentation(
        labels=labels, kinds=kinds, threshold=float(threshold),
        threshold_low=float(threshold_low), flattened=flat, excluded=excluded, params=params,
        background=background, air_level=float(air_level),
        noise_sigma=noise_sigma, threshold_k=threshold_k, scale_spacing_mm=float(spacing),
        rejected_ridges=rejected,
        threshold_map=thr_c, features=features, scores=scores,
    )

    # 9. the pixel model adds what the rules lost (docs/method.md, step 10) ----------------
    if prob_g is not None:
        seg = _add_pixel_lesions(seg, film, sp, lambda lab, first: component_features(
            lab, flat, sig_c, bone_c, tis_c, sp, bone_axis, first), prob_g)
    logger.debug("segment %s: %d lesions, threshold %.4g (low %.4g), sigma %.4g",
                 film.name, seg.n_lesions, threshold, threshold_low, noise_sigma)
    return seg


def segmentation_pixel_features(seg: Segmentation) -> tuple[np.ndarray, np.ndarray, PixelGrid]:
    """:func:`calcimage.pixels.pixel_features` of an ``auto`` segmentation (what step 9 of
    :func:`segment` rates, and what ``benchmarks/train_pixels.py`` trains on)."""
    return pixel_features(*_pixel_inputs(seg))


def _pixel_inputs(seg: Segmentation) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                              np.ndarray, float, float]:
    """The arguments of :func:`calcimage.pixels.pixel_features` for an ``auto`` segmentation."""
    if seg.threshold_map is None or seg.threshold_k is None or seg.background is None:
        raise ValueError("the pixel model needs an 'auto' segmentation (a local threshold map)")
    ex = seg.excluded
    return (seg.flattened, seg.threshold_map / seg.threshold_k, ~_left_out(seg), ex["bone"],
            seg.background, seg.noise_sigma, seg.scale_spacing_mm)


def _rate_pixels(model: str | None, *inputs: Any) -> np.ndarray:
    """The pixel model's probability map (its grid) from the arguments of
    :func:`calcimage.pixels.pixel_features` (:func:`_pixel_inputs` of a segmentation, or
    the same maps before it is made)."""
    x, examined, _ = examined_pixel_features(*inputs)
    return pixel_probability(load_pixel_model(model), x, examined)


def _left_out(seg: Segmentation, box: tuple[slice, slice] | None = None) -> np.ndarray:
    """bool: what segmentation does not examine (outside the body, collimation, markers), on
    ``box`` of the film only when given."""
    ex = seg.excluded
    at = box if box is not None else (slice(None), slice(None))
    return ex["outside_body"][at] | ex["collimation"][at] | ex["marker"][at]


def _frame_in_box(box: tuple[slice, slice], shape: tuple[int, int], width: int) -> np.ndarray:
    """bool on ``box``: the pixels within ``width`` of the edge of a film of ``shape``."""
    rr = np.arange(box[0].start, box[0].stop)
    cc = np.arange(box[1].start, box[1].stop)
    return (((rr < width) | (rr >= shape[0] - width))[:, None]
            | ((cc < width) | (cc >= shape[1] - width))[None, :])


def _add_pixel_lesions(seg: Segmentation, film: Film, sp: tuple[float, float],
                       features_of: Callable[[np.ndarray, int], np.ndarray],
                       prob_g: np.ndarray | None = None) -> Segmentation:
    """Step 9 of :func:`segment`: connected regions where the pixel model reaches
    ``pixel_min_prob``, of at least ``pixel_min_area_mm2``, farther than ``pixel_min_gap_mm``
    from every lesion, touching no excluded area and not long thin ridges, become lesions;
    all labels are renumbered in raster order. Their ``scores`` are their mean pixel
    probability; ``features_of(labels, first)`` gives the feature rows of the components
    ``first``.. of a label image. ``prob_g`` is the model's probability map of ``seg``
    (:func:`_pixel_probability_map`, computed when not given).

    ``seg.labels`` is edited in place when a region is added (:func:`segment` owns it; a full
    copy would add a label image to the peak memory)."""
    params = seg.params
    groups = _pixel_regions(seg, _pixel_probability_map(seg) if prob_g is None else prob_g, sp)
    pixel_area = sp[0] * sp[1]
    n_old = seg.n_lesions
    kinds = list(seg.kinds)
    scores = list(seg.scores)  # empty when no candidate model ran (min_score 0): stays so
    picked = []
    for added, box, prob in groups:
        r0, c0 = box[0].start, box[1].start
        for rp in skmeasure.regionprops(added):
            coords = rp.coords + (r0, c0)
            major, minor, _ = axes_mm(coords, sp)
            area_mm2 = rp.area * pixel_area
            if _long_thin(major, area_mm2, params) or major > params.pixel_max_length_mm:
                continue  # a long thin ridge (cortex, a fat plane's edge) or longer than trained on
            picked.append(coords)
            kinds.append(_region_kind(rp, area_mm2, major, minor, params))
            if seg.scores:
                scores.append(float(prob[rp.coords[:, 0], rp.coords[:, 1]].mean()))
    del groups
    if not picked:
        return seg
    # The added regions take ids after the old lesions'; an old lesion inside an extended
    # one is gone (its id is dropped in the renumbering).
    labels = seg.labels
    new = np.zeros(labels.shape, bool)
    for k, coords in enumerate(picked, n_old + 1):
        labels[coords[:, 0], coords[:, 1]] = k
        new[coords[:, 0], coords[:, 1]] = True
    # Feature rows of the old lesions stand; the added regions' are computed.
    features = (np.concatenate([seg.features, features_of(labels, n_old + 1)])
                if seg.features is not None else None)
    order = renumber_in_raster_order(labels)
    logger.debug("segment %s: the pixel model adds %d lesions", film.name, len(picked))
    return replace(seg, labels=labels, kinds=tuple(kinds[i] for i in order),
                   features=features[order] if features is not None else None,
                   scores=tuple(scores[i] for i in order) if scores else (),
                   pixel_added=new)


def _confident_boxes(prob_g: np.ndarray, shape: tuple[int, int], min_prob: float,
                     pad: int) -> list[tuple[slice, slice]]:
    """Boxes of a film of ``shape`` holding every pixel where ``prob_g`` (a coarser grid),
    resized bilinearly to ``shape``, reaches ``min_prob``: one per cluster of confident
    cells, grown by ``pad`` (clipped) and merged until no two overlap, so that each holds
    its regions whole with ``pad`` around them.

    The confident pixels are a small part of a film but can be spread over most of it: boxes
    per cluster keep step 9's full-size maps to the size of its regions."""
    cells = prob_g >= min_prob
    if not cells.any():
        return []
    # A resized pixel interpolates its 2 x 2 nearest cells: a confident pixel lies next to a
    # confident cell, so within its cluster of the cells grown by one.
    n, _, stats, _ = cv2.connectedComponentsWithStats(
        cv2.dilate(cells.view(np.uint8), np.ones((3, 3), np.uint8)), connectivity=8)
    fr, fc = shape[0] / prob_g.shape[0], shape[1] / prob_g.shape[1]
    boxes = []
    for c0, r0, w, h, _ in stats[1:n]:
        near = (slice(max(0, int(r0 * fr) - 1), min(shape[0], int(math.ceil((r0 + h) * fr)) + 1)),
                slice(max(0, int(c0 * fc) - 1), min(shape[1], int(math.ceil((c0 + w) * fc)) + 1)))
        b = _box(_bilinear_box(prob_g, shape, near) >= min_prob)
        if b is None:  # a lone confident cell can interpolate to no confident pixel
            continue
        a0, b0 = near[0].start + b[0].start, near[1].start + b[1].start
        a1, b1 = near[0].start + b[0].stop, near[1].start + b[1].stop
        boxes.append((slice(max(0, a0 - pad), min(shape[0], a1 + pad)),
                      slice(max(0, b0 - pad), min(shape[1], b1 + pad))))
    merged = True
    while merged:  # a union can reach a third box: repeat until none overlap
        merged = False
        out: list[tuple[slice, slice]] = []
        for b in boxes:
            for i, o in enumerate(out):
                if (b[0].start < o[0].stop and o[0].start < b[0].stop
                        and b[1].start < o[1].stop and o[1].start < b[1].stop):
                    out[i] = _union_box([o, b])
                    merged = True
                    break
            else:
                out.append(b)
        boxes = out
    return boxes


def _pixel_regions(seg: Segmentation, prob_g: np.ndarray, sp: tuple[float, float],
                   ) -> list[tuple[np.ndarray, tuple[slice, slice], np.ndarray]]:
    """The regions step 9 adds: for each box of :func:`_confident_boxes`, the regions as
    labels (1..n, gaps allowed) on a box of the film, that box, and the probability resized
    to it. A region that extends a lesion holds that lesion's pixels too, and its box holds
    the lesion.

    Within each box everything is as on the whole film (what lies farther than the gap from
    a region cannot touch it or be near it); the probability map is resized to the boxes
    only."""
    params = seg.params
    shape = seg.labels.shape
    gap_px = 2 * params.pixel_min_gap_mm / seg.scale_spacing_mm + 1
    near_disc = disc(max(gap_px, 3.0))
    frame_px = int(math.ceil(params.film_edge_mm / seg.scale_spacing_mm)) + 1
    min_area_mm2 = max(params.pixel_min_area_mm2, params.min_area_mm2)  # never under the film's minimum
    lesion_boxes: list[tuple[slice, slice] | None] | None = None
    out = []
    for win in _confident_boxes(prob_g, shape, params.pixel_min_prob, near_disc.shape[0] // 2 + 2):
        prob = _bilinear_box(prob_g, shape, win)
        found, n = ndi.label(prob >= params.pixel_min_prob, structure=np.ones((3, 3), bool),
                             output=np.int32)
        areas = np.bincount(found.ravel(), minlength=n + 1)
        # What the rules keep out stays out: regions within ``pixel_min_gap_mm`` of a lesion
        # already found (a piece of it: a separate label would split it in matching), the film
        # frame, a collimator, a marker or the outside (where the background is extrapolated).
        edge = _left_out(seg, win) | _frame_in_box(win, shape, frame_px)
        labels_w = seg.labels[win]
        lesion_w = labels_w > 0
        near = cv2.dilate(lesion_w.view(np.uint8), near_disc) > 0
        at_edge = cv2.dilate(edge.view(np.uint8), np.ones((3, 3), np.uint8)) > 0
        del edge
        cand = (areas * sp[0] * sp[1] >= min_area_mm2) & (np.bincount(found[at_edge], minlength=n + 1) == 0)
        cand[0] = False
        touched = np.bincount(found[near], minlength=n + 1)
        on_lesion = np.bincount(found[lesion_w], minlength=n + 1)
        del near, at_edge
        # A region near a lesion is left out unless it reaches the lesion and the lesion covers
        # less than ``pixel_extend_max`` of it: the rules found a piece of it; the lesion then
        # becomes the union of the two.
        extend = cand & (on_lesion > 0) & (on_lesion < params.pixel_extend_max * areas)
        cand &= (touched == 0) | extend
        if not cand.any():
            continue
        # Each lesion an extending region reaches joins it (one pass over the lesions' pixels in
        # the box; a lesion two regions reach joins the later one).
        on = lesion_w & extend[found]
        box = win
        region_of = None
        if on.any():
            pairs = np.unique(np.stack([found[on], labels_w[on]]), axis=1)  # sorted by region
            region_of = np.zeros(seg.n_lesions + 1, np.int32)
            region_of[pairs[1]] = pairs[0]
            if lesion_boxes is None:
                lesion_boxes = ndi.find_objects(seg.labels, max_label=seg.n_lesions)
            box = _union_box([win] + [lesion_boxes[k - 1] for k in pairs[1]])
        found[~cand[found]] = 0  # in place
        if box == win:
            added = found
        else:
            r0, c0 = box[0].start, box[1].start
            added = np.zeros((box[0].stop - r0, box[1].stop - c0), np.int32)
            added[win[0].start - r0:win[0].stop - r0, win[1].start - c0:win[1].stop - c0] = found
            prob = _bilinear_box(prob_g, shape, box)
        if region_of is not None:
            joins = region_of[seg.labels[box]]
            added[joins > 0] = joins[joins > 0]
        out.append((added, box, prob))
    return out


def _pixel_probability_map(seg: Segmentation) -> np.ndarray:
    """The pixel model's probability map (its grid) of an ``auto`` segmentation."""
    return _rate_pixels(seg.params.pixel_model, *_pixel_inputs(seg))


def _long_thin(major_mm: float, area_mm2: float, params: SegmentParams) -> bool:
    """Longer than ``ridge_min_length_mm`` and, on average, thinner than ``ridge_max_width_mm``:
    shaped like a cortical edge."""
    return major_mm >= params.ridge_min_length_mm and area_mm2 / major_mm <= params.ridge_max_width_mm


def _region_kind(rp: Any, area_mm2: float, major_mm: float, minor_mm: float,
                 params: SegmentParams) -> LesionKind:
    """:func:`classify` of a regionprops region of ``area_mm2`` and axes ``major_mm``,
    ``minor_mm``; solidity (a convex hull) is computed only from ``plaque_min_area_mm2`` up,
    where it matters."""
    solidity = rp.solidity if area_mm2 >= params.plaque_min_area_mm2 else 1.0
    return classify(area_mm2, major_mm, minor_mm, solidity, params)


def _keep_labels(labels: np.ndarray, kinds: tuple[LesionKind, ...],
                 keep: np.ndarray) -> tuple[np.ndarray, tuple[LesionKind, ...]]:
    """Labels ``k`` with ``keep[k - 1]``, renumbered 1..m in the same (raster) order."""
    new_ids = np.zeros(len(keep) + 1, np.int32)
    new_ids[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    _renumber(labels, new_ids)
    return labels, tuple(k for k, kept in zip(kinds, keep) if kept)


def renumber_in_raster_order(labels: np.ndarray) -> np.ndarray:
    """Number the labels present in ``labels`` 1..m in raster order of their first pixel, in
    place (ids may be missing). Returns ``order``: new label ``i + 1`` was label
    ``order[i] + 1``, so per-lesion tuples follow as ``[old[i] for i in order]``."""
    where = np.flatnonzero(labels)  # ascending: a label's first entry is its first pixel
    ids, first = np.unique(labels.ravel()[where], return_index=True)
    order = ids[np.argsort(first, kind="stable")] - 1
    remap = np.zeros(int(ids.max(initial=0)) + 1, labels.dtype)
    remap[order + 1] = np.arange(1, len(order) + 1)
    _renumber(labels, remap)
    return order


def _renumber(labels: np.ndarray, new_ids: np.ndarray) -> None:
    """``labels = new_ids[labels]`` in place, a strip at a time (peak memory)."""
    for r in range(0, labels.shape[0], 256):
        labels[r:r + 256] = new_ids[labels[r:r + 256]]


def _set_frame(mask: np.ndarray, width: int, value: bool) -> None:
    """Set a frame ``width`` pixels wide along the edges of ``mask`` to ``value`` (in place)."""
    mask[:width] = value
    mask[-width:] = value
    mask[:, :width] = value
    mask[:, -width:] = value


def _open_components(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Binary opening of ``mask`` by ``kernel``, one component at a time in its bounding box.

    The same as opening the whole mask (a connected kernel fits inside one 8-connected
    component, so erosion and dilation act on each separately), but a few components near
    the film edge cost their boxes, not the whole film.
    """
    out = np.zeros(mask.shape, bool)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    pad = max(kernel.shape) + 1
    rows, cols = mask.shape
    for i in range(1, n):
        c0, r0, w, h = stats[i, :4]
        win = (slice(max(0, r0 - pad), min(rows, r0 + h + pad)),
               slice(max(0, c0 - pad), min(cols, c0 + w + pad)))
        comp = (lab[win] == i).astype(np.uint8)
        out[win] |= cv2.morphologyEx(comp, cv2.MORPH_OPEN, kernel).astype(bool)
    return out


def _hysteresis(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Components of ``low`` that contain a ``high`` pixel (8-connectivity)."""
    out = np.zeros(low.shape, bool)
    box = _box(low)
    if box is None:
        return out
    low_b = low[box]
    n, lab = cv2.connectedComponents(low_b.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    if n <= 1:
        return out
    keep = np.zeros(n, bool)
    keep[np.unique(lab[high[box] & low_b])] = True
    keep[0] = False
    out[box] = keep[lab]
    return out


def _mass_gate(mask: np.ndarray, flat: np.ndarray, resid_c: np.ndarray, body_c: np.ndarray,
               fraction: float) -> np.ndarray:
    """Drop components whose contrast mass the working grid does not confirm.

    Area averaging keeps sums, so a real lesion's summed residual on the working grid
    (within one working pixel of it) matches its summed full-size residual. Along a sharp
    step (skin line, bone edge) the working-grid residual is ~0 while the full-size one shows
    a thin band where the reduced background could not place the step exactly: such
    components keep less than ``fraction`` of their mass and are dropped.
    """
    if not mask.any():
        return mask
    rb = resid_c[body_c]
    r_med = float(np.median(rb)) if rb.size else 0.0
    support_c = cv2.dilate((resid_c - r_med).astype(np.float32), np.ones((3, 3), np.uint8))
    support_c = np.maximum(support_c, np.float32(0.0))
    box = _box(mask)
    mask_b = mask[box]
    n, lab = cv2.connectedComponents(mask_b.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    # Sums over the mask's pixels only, in raster order (pixels outside add exact zeros).
    ids = lab[mask_b]
    fine = np.bincount(ids, weights=np.maximum(flat[box][mask_b], 0), minlength=n)
    # The support upsampled (bilinear, pixel centres aligned) at the mask's pixels only.
    rr, cc = np.nonzero(mask_b)
    rr = rr + box[0].start
    cc = cc + box[1].start
    coarse = np.bincount(ids, weights=_bilinear_at(support_c, rr, cc, mask.shape), minlength=n)
    keep = coarse >= fraction * fine
    keep[0] = False
    out = np.zeros(mask.shape, bool)
    out[box] = keep[lab]
    return out


def _bilinear_axis(idx: np.ndarray, n_src: int, n_dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Along one axis, the two source indices and the weight of the second for destination
    pixels ``idx`` of a bilinear resize from ``n_src`` to ``n_dst`` (pixel centres aligned,
    edges replicated, as cv2.resize)."""
    x = (idx + 0.5) * (n_src / n_dst) - 0.5
    x = np.clip(x, 0.0, n_src - 1)
    i0 = np.minimum(np.floor(x).astype(np.intp), n_src - 1)
    i1 = np.minimum(i0 + 1, n_src - 1)
    return i0, i1, x - i0


def _bilinear_at(img: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                 shape: tuple[int, int]) -> np.ndarray:
    """Values of ``img`` resized bilinearly to ``shape`` (pixel centres aligned, edges
    replicated, as cv2.resize) at the pixels (``rows``, ``cols``) only."""
    r0, r1, wr = _bilinear_axis(rows, img.shape[0], shape[0])
    c0, c1, wc = _bilinear_axis(cols, img.shape[1], shape[1])
    top = img[r0, c0] * (1 - wc) + img[r0, c1] * wc
    bottom = img[r1, c0] * (1 - wc) + img[r1, c1] * wc
    return top * (1 - wr) + bottom * wr


def _bilinear_box(img: np.ndarray, shape: tuple[int, int], box: tuple[slice, slice]) -> np.ndarray:
    """float32: ``img`` resized bilinearly to ``shape`` (as :func:`_bilinear_at`) on ``box``
    of the result only."""
    r0, r1, wr = _bilinear_axis(np.arange(box[0].start, box[0].stop), img.shape[0], shape[0])
    c0, c1, wc = _bilinear_axis(np.arange(box[1].start, box[1].stop), img.shape[1], shape[1])
    lo = int(r0[0]) if len(r0) else 0
    src = img[lo:int(r1[-1]) + 1 if len(r1) else lo].astype(np.float64)
    across = src[:, c0] * (1 - wc) + src[:, c1] * wc  # the source rows the box needs
    wr = wr[:, None]
    return (across[r0 - lo] * (1 - wr) + across[r1 - lo] * wr).astype(np.float32)


def _trim_edges(mask: np.ndarray, flat: np.ndarray, fraction: float,
                size_px: float, min_px: float = 0.0) -> np.ndarray:
    """Keep pixels of ``mask`` at or above ``fraction`` × the local peak (within ``size_px``).

    Detector blur spreads a dense lesion far beyond its footprint; the low hysteresis threshold
    would follow that tail. Cutting at a fraction of the local peak puts the edge where the
    blurred step has fallen to that fraction, for faint and dense lesions alike. Components of
    fewer than ``min_px`` pixels are dropped (not trimmed).
    """
    if (fraction <= 0 and min_px <= 0) or not mask.any():
        return mask
    k = max(3, int(round(size_px)) | 1)
    box = _box(mask, pad=k)
    full = np.zeros_like(mask)
    full[box] = _trim_edges_box(mask[box], flat[box], fraction, k, min_px)
    return full


def _trim_edges_box(mask: np.ndarray, flat: np.ndarray, fraction: float, k: int,
                    min_px: float = 0.0) -> np.ndarray:
    """:func:`_trim_edges` on a crop that holds every component with a ``k``-pixel margin."""
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    out = np.zeros_like(mask)
    kernel = np.ones((k, k), np.uint8)
    pad = k
    rows, cols = mask.shape
    for i in range(1, n):
        c0, r0, w, h = stats[i, :4]
        if stats[i, cv2.CC_STAT_AREA] < min_px:
            continue
        r0p, c0p = max(0, r0 - pad), max(0, c0 - pad)
        r1p, c1p = min(rows, r0 + h + pad), min(cols, c0 + w + pad)
        comp = lab[r0p:r1p, c0p:c1p] == i
        if fraction > 0:
            f = np.where(comp, flat[r0p:r1p, c0p:c1p], -np.inf).astype(np.float32)
            comp &= f >= fraction * cv2.dilate(f, kernel)
        out[r0p:r1p, c0p:c1p] |= comp
    return out


def _reaches(coords: np.ndarray, flat: np.ndarray | None,
             thr_at: Callable[[np.ndarray, np.ndarray], np.ndarray] | None, factor: float,
             percentile: float = 90.0) -> bool:
    """Whether a component's ``percentile`` contrast reaches ``factor`` times its median
    local threshold (False when either image is missing or ``factor`` is 0)."""
    if flat is None or thr_at is None or factor <= 0:
        return False
    rr, cc = coords[:, 0], coords[:, 1]
    return float(np.percentile(flat[rr, cc], percentile)) >= factor * float(np.median(thr_at(rr, cc)))


def _solid_along_bone(coords: np.ndarray, area_mm2: float, orientation: float, flat: np.ndarray | None,
                      thr_at: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
                      bone_axis: float | None, params: SegmentParams) -> bool:
    """Whether an elongated component on the cortex band is a plaque along the bone: at least
    ``ridge_keep_min_mm2``, median contrast at its local threshold, major axis within
    ``ridge_keep_max_angle_deg`` of ``bone_axis`` (angles modulo 180°)."""
    if params.ridge_keep_min_mm2 <= 0 or area_mm2 < params.ridge_keep_min_mm2 or bone_axis is None:
        return False
    off = abs((orientation - bone_axis + math.pi / 2) % math.pi - math.pi / 2)
    if math.degrees(off) > params.ridge_keep_max_angle_deg:
        return False
    return _reaches(coords, flat, thr_at, 1.0, percentile=50.0)


def _label_and_classify(mask: np.ndarray, film: Film, spacing: float, params: SegmentParams,
                        bone_band: np.ndarray | None = None, flat: np.ndarray | None = None,
                        thr_c: np.ndarray | None = None, bone_axis: float | None = None,
                        ) -> tuple[np.ndarray, tuple[LesionKind, ...], int]:
    """:func:`_label_and_classify_box` on the bounding box of ``mask`` (same labels, in raster
    order; labelling a whole film for a few lesions is most of the cost). ``thr_c`` is the
    hand rules' threshold map (``rule_k_sigma`` local sigmas) on the working grid, sampled bilinearly at a component's pixels; ``bone_axis``
    the angle of the bone's principal axis (:func:`axes_mm` convention)."""
    labels = np.zeros(mask.shape, np.int32)
    box = _box(mask)
    if box is None:
        return labels, (), 0

    def crop(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[box]

    thr_at: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    if thr_c is not None:
        r0, c0, thr_grid = box[0].start, box[1].start, thr_c

        def _thr_at(rr: np.ndarray, cc: np.ndarray) -> np.ndarray:
            return _bilinear_at(thr_grid, rr + r0, cc + c0, mask.shape)

        thr_at = _thr_at

    labels[box], kinds, rejected = _label_and_classify_box(
        mask[box], film, spacing, params, crop(bone_band), crop(flat), thr_at, bone_axis)
    return labels, kinds, rejected


def _label_and_classify_box(mask: np.ndarray, film: Film, spacing: float, params: SegmentParams,
                            bone_band: np.ndarray | None = None, flat: np.ndarray | None = None,
                            thr_at: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                            bone_axis: float | None = None,
                            ) -> tuple[np.ndarray, tuple[LesionKind, ...], int]:
    """Label (8-connectivity), drop small components and cortical ridges, classify.

    Ridges: components longer than ``ridge_min_length_mm`` and thinner (mean width) than
    ``ridge_max_width_mm`` anywhere; on bone (mostly inside ``bone_band``) any component at
    least ``ridge_min_elongation`` times longer than wide lying mostly within
    ``cortex_band_mm`` of the bone outline (cortex fragments), unless its 90th-percentile
    contrast reaches ``ridge_keep_factor`` × its local threshold, or it is at least
    ``ridge_keep_min_mm2``, its median contrast reaches its local threshold and it runs within
    ``ridge_keep_max_angle_deg`` of ``bone_axis`` (a plaque along the cortex).
    """
    sp = film.spacing_mm if film.spacing_mm is not None else (spacing, spacing)
    pixel_area = sp[0] * sp[1]
    # What skimage.measure.label(mask, connectivity=2) runs for a boolean mask, straight to int32.
    labels, n_lab = ndi.label(mask, structure=np.ones((3, 3), bool), output=np.int32)
    if n_lab == 0:
        return labels, (), 0
    # Over the mask's pixels only: bincount of the whole image would cast it to int64.
    areas = np.bincount(labels[mask], minlength=n_lab + 1)
    keep = areas * pixel_area >= params.min_area_mm2
    keep[0] = False
    kinds: list[LesionKind] = []
    rejected = 0
    new_ids = np.zeros(len(areas), np.int32)
    next_id = 1
    for rp in skmeasure.regionprops(labels):
        if not keep[rp.label]:
            continue
        major, minor, orientation = axes_mm(rp.coords, sp)
        area_mm2 = rp.area * pixel_area
        # Cortical edges: longer than a plaque, and thin. A plaque grown on a follow-up can be
        # as long; it is kept up to ``ridge_solid_length_mm`` when its median contrast reaches
        # ``ridge_solid_contrast`` local thresholds (the edge of an unrecognised bone end is
        # mostly skirt at the hysteresis level).
        if (_long_thin(major, area_mm2, params)
                and not (major < params.ridge_solid_length_mm
                         and _reaches(rp.coords, flat, thr_at, params.ridge_solid_contrast, percentile=50.0))):
            rejected += 1
            continue
        if bone_band is not None:
            on_band = bone_band[rp.coords[:, 0], rp.coords[:, 1]].mean() >= 0.5
            if (on_band and major >= params.ridge_min_elongation * max(minor, 1e-9)
                    and not _reaches(rp.coords, flat, thr_at, params.ridge_keep_factor)
                    and not _solid_along_bone(rp.coords, area_mm2, orientation, flat, thr_at, bone_axis, params)):
                rejected += 1
                continue
            # Along the bone outline (cortex, metaphyseal flare) a lesion must stand out
            # ``cortex_factor`` times more than elsewhere.
            if (on_band and params.cortex_factor > 1 and flat is not None and thr_at is not None
                    and not _reaches(rp.coords, flat, thr_at, params.cortex_factor)):
                rejected += 1
                continue
        new_ids[rp.label] = next_id
        next_id += 1
        kinds.append(_region_kind(rp, area_mm2, major, minor, params))
    _renumber(labels, new_ids)
    return labels, tuple(kinds), rejected
