"""The public API the design names: calcimage.load / segment / measure / compare."""

from __future__ import annotations

import inspect
import logging

import calcimage


def test_stage_functions_and_signatures() -> None:
    assert list(inspect.signature(calcimage.load).parameters) == ["path", "spacing_mm"]
    assert inspect.signature(calcimage.load).parameters["spacing_mm"].kind is inspect.Parameter.KEYWORD_ONLY
    seg_params = inspect.signature(calcimage.segment).parameters
    assert list(seg_params) == ["film", "params", "bone_hint"]
    # the design's segment(film, params); bone_hint (a pair's shared bone) is keyword-only
    assert seg_params["bone_hint"].kind is inspect.Parameter.KEYWORD_ONLY and seg_params["bone_hint"].default is None
    assert list(inspect.signature(calcimage.measure).parameters)[:3] == ["film", "seg", "regions"]
    assert list(inspect.signature(calcimage.compare).parameters) == ["base", "follow", "params"]
    assert isinstance(calcimage.segment.__defaults__[0], calcimage.SegmentParams)
    assert isinstance(calcimage.compare.__defaults__[0], calcimage.CompareParams)


def test_package_adds_only_a_null_handler() -> None:
    handlers = logging.getLogger("calcimage").handlers
    assert handlers and all(isinstance(h, logging.NullHandler) for h in handlers)


def test_everything_in_all_exists() -> None:
    missing = [name for name in calcimage.__all__ if not hasattr(calcimage, name)]
    assert missing == []
