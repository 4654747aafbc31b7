"""The face crop InceptionResnetV1 embeds: facenet-pytorch's `extract_face` and `fixed_image_standardization`."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CROP_SIZE = 160


def crop_face(image: np.ndarray, box: np.ndarray, margin: int) -> torch.Tensor:
    """facenet's `extract_face` + `fixed_image_standardization`: a [3, 160, 160] float crop.

    `margin` is in pixels of the 160-px crop, as in the library; the box is clipped to the frame.
    """
    h, w = image.shape[:2]
    pad = margin * (box[2:] - box[:2]) / (CROP_SIZE - margin) / 2
    x1, y1 = min(max(int(box[0] - pad[0]), 0), w - 1), min(max(int(box[1] - pad[1]), 0), h - 1)
    x2, y2 = int(min(box[2] + pad[0], w)), int(min(box[3] + pad[1], h))
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    face = torch.from_numpy(image[y1:y2, x1:x2]).permute(2, 0, 1)[None].float()
    face = F.interpolate(face, size=(CROP_SIZE, CROP_SIZE), mode="bilinear", antialias=True,
                         align_corners=False)
    return ((face[0] - 127.5) / 128.0)
