"""`landmarks`: MTCNN's five facial points of the tracked face, normalised to its box.

The points come from the O-net of the same detection pass that gives the `facenet` boxes (no second
detection). Dividing by the box makes them independent of the face's size and place in the frame,
so they describe its shape and pose: x' = (x - x1) / (x2 - x1), y' = (y - y1) / (y2 - y1), about 0..1
inside the box. Frames without a face (a zero-size box) are 0.
"""
from __future__ import annotations

import numpy as np
import torch

POINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")   # MTCNN's order
NAMES = [f"{point}_{axis}" for point in POINTS for axis in "xy"]


def onet_points(boxes: torch.Tensor, marks: torch.Tensor) -> torch.Tensor:
    """MTCNN's five points [k, 5, 2] in image pixels from O-net's landmark output `marks` [k, 10]
    (x0..x4, y0..y4 as fractions of the O-net crop) and the boxes [k, >=4] that were cropped, i.e.
    before O-net's box regression: facenet-pytorch's `detect_face` arithmetic."""
    size = boxes[:, 2:4] - boxes[:, 0:2] + 1
    xs = size[:, :1] * marks[:, :5] + boxes[:, :1] - 1
    ys = size[:, 1:2] * marks[:, 5:10] + boxes[:, 1:2] - 1
    return torch.stack([xs, ys], dim=2)


def normalise_landmarks(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """points [n, 5, 2] and boxes [n, 4] (x1, y1, x2, y2), both in frame pixels -> [n, 10] float32 in
    NAMES order; rows whose box has no area are 0."""
    points = np.asarray(points, np.float64).reshape(-1, len(POINTS), 2)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    origin, size = boxes[:, None, :2], boxes[:, None, 2:] - boxes[:, None, :2]
    has_area = np.all(size[:, 0] > 0, axis=1)
    out = np.zeros_like(points)
    out[has_area] = (points[has_area] - origin[has_area]) / size[has_area]
    return out.reshape(len(points), 2 * len(POINTS)).astype(np.float32)
