"""`Detections`: the one value type that flows from the detector through zones and counting."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.config import Anchor


@dataclass(frozen=True, slots=True)
class Detections:
    """N person boxes in source-image pixels: ``xyxy`` (N,4) float32, ``confidence`` (N,) float32."""

    xyxy: np.ndarray
    confidence: np.ndarray

    def __post_init__(self) -> None:
        if self.xyxy.ndim != 2 or self.xyxy.shape[1] != 4:
            raise ValueError(f"xyxy must be (N, 4), got {self.xyxy.shape}")
        if self.confidence.shape != (self.xyxy.shape[0],):
            raise ValueError(f"confidence must be ({self.xyxy.shape[0]},), got {self.confidence.shape}")

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: np.ndarray | slice) -> Detections:
        return Detections(self.xyxy[index].reshape(-1, 4), self.confidence[index].reshape(-1))

    def anchors(self, anchor: Anchor) -> np.ndarray:
        """(N, 2) points that decide where each person is (see `Anchor`)."""
        x = (self.xyxy[:, 0] + self.xyxy[:, 2]) / 2
        if anchor is Anchor.BOTTOM_CENTER:
            y = self.xyxy[:, 3]
        elif anchor is Anchor.TOP_CENTER:
            # a little below the top edge: inside the head, not the hair line
            y = self.xyxy[:, 1] + 0.1 * (self.xyxy[:, 3] - self.xyxy[:, 1])
        else:
            y = (self.xyxy[:, 1] + self.xyxy[:, 3]) / 2
        return np.stack([x, y], axis=1)

    def with_min_confidence(self, conf: float) -> Detections:
        return self[self.confidence >= conf]
