"""OpenCV's uint8 image resize (cv2.resize with its default INTER_LINEAR), bit for bit, in numpy: the
face encoders whose reference code resizes with OpenCV (fer, EmotiEffLib's ONNX branch) get their
input exactly, without OpenCV as a dependency. Checked against OpenCV 4.x (tests/test_expression.py,
tests/test_face_encoders.py)."""
from __future__ import annotations

import numpy as np


def _linear_taps(src: int, dst: int, clamp_weights: bool):
    """OpenCV's INTER_LINEAR source indices and 11-bit weights along one axis: (i0, i1, w0, w1).

    Past the edges both taps read the edge pixel; OpenCV also sets the weights to (1, 0) there
    along x but keeps the interpolation weights along y, which can round one level differently.
    """
    scale = 1.0 / (dst / src)                                   # cv::resize: scale = 1 / inv_scale
    pos = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    i0 = np.floor(pos).astype(np.int64)
    frac = (pos - i0).astype(np.float32)
    if clamp_weights:
        frac[(i0 < 0) | (i0 >= src - 1)] = 0
    w0 = np.rint((np.float32(1) - frac) * np.float32(2048)).astype(np.int64)
    w1 = np.rint(frac * np.float32(2048)).astype(np.int64)
    return np.clip(i0, 0, src - 1), np.clip(i0 + 1, 0, src - 1), w0, w1


def resize_uint8(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """cv2.resize(img, (width, height)) of a uint8 image [h, w] or [h, w, channels] (each channel
    alike) with its default INTER_LINEAR."""
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img.copy()
    if (h, w) == (2 * height, 2 * width):                       # OpenCV switches to its fast 2x2 area mean
        blocks = img.astype(np.int32).reshape(height, 2, width, 2, *img.shape[2:]).sum(axis=(1, 3))
        return ((blocks + 2) >> 2).astype(np.uint8)
    x0, x1, a0, a1 = _linear_taps(w, width, clamp_weights=True)
    y0, y1, b0, b1 = _linear_taps(h, height, clamp_weights=False)
    tail = (None,) * (img.ndim - 2)                             # weights broadcast over the channels
    src = img.astype(np.int64)
    rows = src[:, x0] * a0[(slice(None), *tail)] + src[:, x1] * a1[(slice(None), *tail)]
    # vertical pass as OpenCV's SIMD kernel computes it: 16-bit high products, then a rounding shift by 2
    top = ((rows[y0] >> 4) * b0[(slice(None), None, *tail)]) >> 16
    bottom = ((rows[y1] >> 4) * b1[(slice(None), None, *tail)]) >> 16
    return np.clip((top + bottom + 2) >> 2, 0, 255).astype(np.uint8)
