"""Landmarks normalised to the face box: by hand, and on MTCNN's own five points of a drawn face."""
import numpy as np
from facenet_pytorch import MTCNN

from avfusion.extractors.landmarks import NAMES, normalise_landmarks
from avfusion.sources.demo import draw_face

LOOK = {"background": (40, 60, 80), "stripe": (60, 80, 100), "skin": (220, 170, 130), "face_w": 0.5, "face_h": 0.65}


def test_names_follow_mtcnns_point_order():
    assert NAMES == ["left_eye_x", "left_eye_y", "right_eye_x", "right_eye_y", "nose_x", "nose_y",
                     "mouth_left_x", "mouth_left_y", "mouth_right_x", "mouth_right_y"]


def test_points_become_fractions_of_the_box_and_no_face_is_zero():
    box = np.array([[100, 50, 300, 450], [0, 0, 0, 0]], np.float32)        # 200 x 400 px; no face
    points = np.zeros((2, 5, 2), np.float32)
    points[0] = [[150, 150], [250, 150], [200, 250], [160, 350], [240, 350]]
    points[1] = 7.0
    out = normalise_landmarks(points, box)
    assert out.shape == (2, 10) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], [0.25, 0.25, 0.75, 0.25, 0.5, 0.5, 0.3, 0.75, 0.7, 0.75])
    assert not out[1].any()


def test_mtcnn_points_of_a_drawn_face_land_where_it_was_drawn():
    image = np.asarray(draw_face(192, LOOK, valence=0.5, eye_open=0.8, center=(90, 100)))
    boxes, _, points = MTCNN(device="cpu").detect(image, landmarks=True)
    assert boxes is not None, "MTCNN found no face in the drawn image"
    row = dict(zip(NAMES, normalise_landmarks(points[:1], boxes[:1])[0]))
    assert row["left_eye_x"] < row["nose_x"] < row["right_eye_x"]
    assert row["mouth_left_x"] < row["nose_x"] < row["mouth_right_x"]
    assert max(row["left_eye_y"], row["right_eye_y"]) < row["nose_y"] < min(row["mouth_left_y"], row["mouth_right_y"])
    assert all(0 < value < 1 for value in row.values())


def test_onet_points_reproduce_the_librarys_detect(monkeypatch):
    """Capture the library's O-net output and the boxes it cropped during MTCNN.detect: onet_points
    gives back exactly the points that detect returns."""
    import facenet_pytorch.models.utils.detect_face as library

    from avfusion.faces.mtcnn import onet_points

    seen = {}
    batch_process, bbreg = library.fixed_batch_process, library.bbreg
    monkeypatch.setattr(library, "fixed_batch_process",
                        lambda data, model: seen.setdefault(model.__class__.__name__, batch_process(data, model)))
    monkeypatch.setattr(library, "bbreg", lambda boxes, reg: (seen.__setitem__("boxes", boxes.clone()), bbreg(boxes, reg))[1])
    image = np.asarray(draw_face(192, LOOK, valence=0.5, eye_open=0.8, center=(90, 100)))
    _, _, points = MTCNN(device="cpu").detect(image, landmarks=True)
    _, marks, score = seen["ONet"]
    passed = score[:, 1] > 0.7                                # MTCNN's default O-net threshold
    mine = onet_points(seen["boxes"], marks[passed]).numpy()   # the last bbreg is O-net's, on passed boxes
    assert points is not None and len(points) >= 1            # one image: points [faces, 5, 2]
    for found in np.asarray(points, np.float32):
        assert np.abs(mine - found).max(axis=(1, 2)).min() < 1e-4
