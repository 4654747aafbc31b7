"""`landmarks`: MTCNN's five facial points of the tracked face, normalised to its box.

The points come from the O-net of the same detection pass that gives the `facenet` boxes (no second
detection). Dividing by the box makes them independent of the face's size and place in the frame,
so they describe its shape and pose: x' = (x - x1) / (x2 - x1), y' = (y - y1) / (y2 - y1), about 0..1
inside the box. Frames without a face (a zero-size box) are 0.
"""
from __future__ import annotations

import numpy as np

POINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")   # MTCNN's order
NAMES = [f"{point}_{axis}" for point in POINTS for axis in "xy"]


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
