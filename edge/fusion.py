"""Fixes for tiled detection of people larger than a tile, and for low-threshold clutter.

`whole_person_pass`: at a high tile scale a person larger than a tile is seen by every tile only in part, and
each part can be boxed as a person (a 1920x1080 close-up of 2 people gave 12 boxes at scale 2). Every such part
touches an inner tile border (it is *truncated*). When a truncated box spans at least ``LARGE`` of the tile
side, one full-frame pass is run on that frame (cost: one inference, only on frames with such boxes) and
its people taller or wider than that are added as whole boxes; the merge's rule 1 (edge/tiling.py) then drops
the fragments they cover. Small full-frame boxes are not added: tiles see small people better.

`plausible`: at a low threshold (0.10) desk legs, desk edges and bins become "people": low-score boxes that
are thin, flat, or much smaller than the people around them (see its docstring).
"""

from __future__ import annotations

import numpy as np

from edge.config import DetectConfig
from edge.detections import Detections
from edge.detector import Detector, letterbox

LARGE = 0.5  # a truncated box this share of the tile side (or more) may be part of a person larger than a tile
MIN_ASPECT = 0.2  # width / height below this is a pole (desk or chair leg), not a person
MIN_REL_HEIGHT = 0.4  # a low-score box shorter than this share of the confident people's median is clutter
STRICT_CONF = 0.25  # boxes scoring this or more are never filtered by shape


def has_large_fragment(xyxy: np.ndarray, truncated: np.ndarray, tile_side: float) -> bool:
    """Whether a box cut by an inner tile border spans ``LARGE`` of the tile side or more."""
    if not truncated.any():
        return False
    wh = xyxy[truncated, 2:] - xyxy[truncated, :2]
    return bool((wh.max(axis=1) >= LARGE * tile_side).any())


def whole_people(det: Detector, frame: np.ndarray, cfg: DetectConfig, conf: float, tile_side: float) -> Detections:
    """One full-frame pass; only the people at least ``LARGE`` of a tile side tall or wide (frame pixels)."""
    img, lb = letterbox(frame, det.input_size, auto=det.dynamic, stride=det.stride)
    out = det.infer(det.blob([img]))
    xyxy, scores = det.decode(out[0], conf, cfg.iou, cfg.max_det)
    dets = Detections(lb.to_source(xyxy, frame.shape[1], frame.shape[0]), scores)
    wh = dets.xyxy[:, 2:] - dets.xyxy[:, :2]
    return dets[wh.max(axis=1) >= LARGE * tile_side] if len(dets) else dets


def plausible(dets: Detections, strict_conf: float = STRICT_CONF) -> Detections:
    """Drop low-score boxes shaped like clutter; boxes scoring ``strict_conf`` or more always stay.

    A low-score box must be person-shaped (``MIN_ASPECT`` <= width / height <= 1 / ``MIN_ASPECT``: not a desk
    or chair leg, not a desk edge) and not much smaller than the confident people of the frame (height at least
    ``MIN_REL_HEIGHT`` of their median: a bin or a bag far smaller than the people seated around it).
    """
    if len(dets) == 0:
        return dets
    wh = (dets.xyxy[:, 2:] - dets.xyxy[:, :2]).clip(1e-6)
    aspect = wh[:, 0] / wh[:, 1]
    sure = dets.confidence >= strict_conf
    shaped = (aspect >= MIN_ASPECT) & (aspect <= 1 / MIN_ASPECT)
    if sure.sum() >= 3:  # enough confident people to know how tall a person is here
        shaped &= wh[:, 1] >= MIN_REL_HEIGHT * float(np.median(wh[sure, 1]))
    return dets[sure | shaped]
