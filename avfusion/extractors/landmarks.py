"""`landmarks`: MTCNN's five facial points of the tracked face, normalised to its box.

The points come from the O-net of the same detection pass that gives the facenet boxes (no second
detection): the facenet store keeps them, in pixels, so this reads that store only (no decoding).
Dividing by the box makes them independent of the face's size and place in the frame, so they
describe its shape and pose: x' = (x - x1) / (x2 - x1), y' = (y - y1) / (y2 - y1), about 0..1 inside
the box. Frames without a face (a zero-size box) are 0.
"""
from __future__ import annotations

import numpy as np

from avfusion.extraction.base import Video, register
from avfusion.extraction.faces import FaceExtractor

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


@register
class LandmarksExtractor(FaceExtractor):
    """10 columns `left_eye_x` ... `mouth_right_y`."""

    name, version = "landmarks", "mtcnn-onet-points-normalised/1"
    face_columns = ("valid", "box", "landmarks", "time")

    def __init__(self, params: dict, device: str = "cpu"):
        super().__init__(params, device)
        self.names, self.dim = list(NAMES), len(NAMES)

    def on_faces(self, video: Video, faces: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        valid = faces["valid"].astype(bool)
        points = normalise_landmarks(faces["landmarks"], faces["box"])
        points[~valid] = 0
        return {"embedding": points, "valid": valid, "time": np.asarray(faces["time"], np.float64)}
