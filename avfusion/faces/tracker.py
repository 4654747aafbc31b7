"""Following one person through a video's detections (`visual.people: one`)."""
from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

MIN_IOU = 0.2          # a detection continues the track when it overlaps the last box this much
PATIENCE = 10          # frames the tracked face may stay unmatched before another face is picked


class FaceTracker:
    """Follows one person: the largest central face at the start, then the detection overlapping the
    last box; after PATIENCE frames unmatched, picks again. (`_left`/`_right` trials follow the
    multi-person tracker's tracks instead: avfusion/tracks.py.)"""

    def __init__(self, width: int, height: int):
        self.center = np.array([width / 2, height / 2], np.float32)
        self.last, self.missed = None, 0
        self.motion = np.zeros(4, np.float32)   # box change since the frame before, while followed

    @property
    def following(self) -> bool:
        """Whether the last frame had the tracked face (so it can be tracked into this one)."""
        return self.last is not None and self.missed == 0

    def _pick(self, boxes: np.ndarray) -> int:
        centers = (boxes[:, :2] + boxes[:, 2:]) / 2
        area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
        offcenter = np.linalg.norm(centers - self.center, axis=1) / np.linalg.norm(self.center)
        return int(np.argmax(area * (1 - 0.5 * offcenter)))

    def update(self, boxes: np.ndarray) -> int | None:
        """Index of the tracked face among this frame's detections, or None."""
        chosen = None
        if len(boxes) and self.last is not None:
            overlap = box_iou(torch.from_numpy(self.last[None]), torch.from_numpy(boxes))[0].numpy()
            if overlap.max() >= MIN_IOU:
                chosen = int(overlap.argmax())
        if chosen is None and len(boxes) and (self.last is None or self.missed >= PATIENCE):
            chosen = self._pick(boxes)
        if chosen is None:
            self.missed += 1
        else:
            self.motion = boxes[chosen] - self.last if self.following else np.zeros(4, np.float32)
            self.last, self.missed = boxes[chosen], 0
        return chosen
