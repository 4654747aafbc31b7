"""The project's batched MTCNN against facenet-pytorch's own `MTCNN.detect` on real street frames.

The project runs the library's networks, cascade and crop step (each box clipped to the frame, the
clipped pixels area-resized) on batches of frames. Whether both find the same faces in the same places
is measured here, on real faces: small ones as the pipeline sees them (frames downscaled to 640x360),
larger ones at full resolution, and faces cut by the frame's edges; and whether the five facial points
(the `landmarks` extractor's input) are the library's.
"""
from pathlib import Path

import numpy as np
import pytest
import torch
from facenet_pytorch import MTCNN
from PIL import Image
from torchvision.ops import box_iou

from avfusion.faces.embedder import FaceDetector

FRAMES = sorted((Path(__file__).parent / "fixtures" / "faces").glob("*.jpg"))
MIN_IOU = 0.9
POINT_TOLERANCE = 0.01   # pixels: same networks, crops and arithmetic (measured: at most 6e-5 px off)


@pytest.fixture(scope="module")
def detections_and_points() -> dict[str, tuple]:
    """Per frame: (image, our boxes, the library's boxes, our points, the library's points), both
    detectors at the library's defaults."""
    ours, library = FaceDetector("cpu"), MTCNN(device="cpu")
    found = {}
    for path in FRAMES:
        image = np.array(Image.open(path).convert("RGB"))
        theirs, _, their_points = library.detect(Image.fromarray(image), landmarks=True)   # None: no face
        (our_boxes, _, our_points), = ours(image[None], landmarks=True)
        if theirs is None:
            theirs, their_points = np.zeros((0, 4)), np.zeros((0, 5, 2))
        found[path.name] = (image, our_boxes, theirs.astype(np.float32), our_points, their_points.astype(np.float32))
    return found


@pytest.fixture(scope="module")
def detections(detections_and_points) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per frame: (image, our boxes, the library's boxes)."""
    return {name: found[:3] for name, found in detections_and_points.items()}


def disagreement(ours: np.ndarray, theirs: np.ndarray) -> list[str]:
    """What differs between two sets of boxes, matched one to one by IoU (greedily, best pair first);
    empty when they agree."""
    iou = box_iou(torch.as_tensor(theirs), torch.as_tensor(ours)).numpy()
    problems = [f"{len(ours)} faces found, the reference finds {len(theirs)}"] if len(ours) != len(theirs) else []
    while iou.size and iou.max() > 0:
        i, j = np.unravel_index(iou.argmax(), iou.shape)
        if iou[i, j] < MIN_IOU:
            problems.append(f"reference box {np.round(theirs[i].astype(float), 1).tolist()} vs ours "
                            f"{np.round(ours[j].astype(float), 1).tolist()}: IoU {iou[i, j]:.3f}")
        iou[i, :], iou[:, j] = 0, 0
    return problems


def test_the_fixture_has_several_faces_and_faces_cut_by_the_edge(detections):
    assert len(detections) == 4 and all(len(theirs) >= 3 for _, _, theirs in detections.values())
    image, _, theirs = detections["faces_cut_by_the_edges.jpg"]
    height, width = image.shape[:2]
    assert ((theirs[:, :2] < 0) | (theirs[:, 2:] > [width, height])).any()   # a box reaches past an edge


def test_same_faces_as_the_library(detections):
    problems = [f"{name}: {problem}" for name, (_, ours, theirs) in detections.items()
                for problem in disagreement(ours, theirs)]
    assert not problems, "\n".join(problems)


def test_same_five_points_as_the_library(detections_and_points):
    """Each face's points (matched by its box) lie within 0.01 px of `MTCNN.detect(..., landmarks=True)`'s."""
    faces, errors = 0, []
    for name, (_, ours, theirs, our_points, their_points) in detections_and_points.items():
        assert our_points.shape == (len(ours), 5, 2)
        iou = box_iou(torch.as_tensor(theirs), torch.as_tensor(ours)).numpy()
        for i, j in enumerate(iou.argmax(axis=1) if iou.size else []):
            if iou[i, j] >= MIN_IOU:
                faces += 1
                errors.append((np.abs(our_points[j] - their_points[i]).max(), name, i))
    assert faces >= 12, "too few matched faces to compare points on"
    worst = max(errors)
    assert worst[0] <= POINT_TOLERANCE, f"{worst[1]} face {worst[2]}: a point {worst[0]:.3g} px from the library's"


@pytest.mark.gpu
def test_cuda_finds_the_same_faces_as_the_cpu(detections):
    """The detector runs in float32 on either device (TF32 convolutions aside): the same faces result."""
    on_cuda = FaceDetector("cuda")
    problems = [f"{name}: {problem}" for name, (image, on_cpu, _) in detections.items()
                for problem in disagreement(on_cuda(image[None])[0][0], on_cpu)]
    assert not problems, "\n".join(problems)
