"""Visual features on real encoded videos made here: drawn faces (MTCNN finds them), none, two, odd sizes."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from avfusion.extractors import facenet as visual
from avfusion.faces.crop import crop_face
from avfusion.faces.embedder import FaceTrackEmbedder, random_state_dict
from avfusion.faces.tracker import FaceTracker
from avfusion.sources.demo import draw_face
from avfusion.sources.media import frame_times
from avfusion.store.reader import FeatureReader

from conftest import LOOK, extract, make_project, tree_digest
from conftest import encode_video as encode

OUT_DIR = os.path.join("data", "features", "facenet")


def face(size: int, eye_open: float = 0.8, dx: float = 0.0) -> Image.Image:
    return draw_face(size, LOOK, valence=0.5, eye_open=eye_open, center=(size / 2 + dx, size / 2))


def two_faces(left: int, right: int) -> Image.Image:
    canvas = Image.new("RGB", (left + right, max(left, right)), LOOK["background"])
    canvas.paste(face(left), (0, 0))
    canvas.paste(face(right), (left, (max(left, right) - right) // 2))
    return canvas


def blank(width: int, height: int) -> Image.Image:
    return Image.new("RGB", (width, height), LOOK["stripe"])


@pytest.fixture(scope="module")
def embedder() -> FaceTrackEmbedder:
    return FaceTrackEmbedder(random_state_dict(0), "cpu", batch_size=32, keep_pooled=True)


def check_rows(rows: dict, n: int) -> None:
    assert rows["embedding"].shape == (n, 512) and rows["pooled"].shape == (n, 1792)
    assert rows["valid"].shape == rows["prob"].shape == rows["time"].shape == (n,) and rows["box"].shape == (n, 4)
    assert np.all(np.diff(rows["time"]) > 0)
    norms = np.linalg.norm(rows["embedding"], axis=1)
    np.testing.assert_allclose(norms[rows["valid"]], 1, atol=1e-4)      # InceptionResnetV1 L2-normalises
    assert not rows["embedding"][~rows["valid"]].any() and not rows["box"][~rows["valid"]].any()
    assert not rows["prob"][~rows["valid"]].any() and np.all(rows["prob"][rows["valid"]] > 0.7)
    assert rows["landmarks"].shape == (n, 10) and not rows["landmarks"][~rows["valid"]].any()


def test_face_found_in_most_frames_and_boxed(tmp_path, embedder):
    frames = [face(192, eye_open=0.4 + 0.1 * i, dx=2 * i) for i in range(6)]
    rows = embedder.embed_video(encode(tmp_path / "face.mp4", frames))
    check_rows(rows, 6)
    assert rows["valid"].sum() >= 5
    centres = (rows["box"][rows["valid"], :2] + rows["box"][rows["valid"], 2:]) / 2
    assert np.all(np.abs(centres - 96) < 30)      # the drawn face is centred in the frame
    assert not np.allclose(rows["embedding"][rows["valid"]][0], rows["embedding"][rows["valid"]][-1])


def test_no_face_gives_invalid_zero_rows(tmp_path, embedder):
    rows = embedder.embed_video(encode(tmp_path / "empty.mp4", [blank(160, 120)] * 5))
    check_rows(rows, 5)
    assert not rows["valid"].any()


def test_face_appearing_midway(tmp_path, embedder):
    frames = [blank(192, 192)] * 3 + [face(192)] * 3
    rows = embedder.embed_video(encode(tmp_path / "late.mp4", frames))
    check_rows(rows, 6)
    assert not rows["valid"][:3].any() and rows["valid"][3:].sum() >= 2


def test_two_faces_the_larger_is_followed(tmp_path, embedder):
    rows = embedder.embed_video(encode(tmp_path / "two.mp4", [two_faces(192, 144)] * 3))
    check_rows(rows, 3)
    assert rows["valid"].sum() >= 2
    box = rows["box"][rows["valid"]]
    assert np.all((box[:, 0] + box[:, 2]) / 2 < 192)                # the larger face


@pytest.mark.parametrize("size", [(161, 97), (97, 161)])
def test_odd_resolution_and_single_frame(tmp_path, embedder, size):
    one = embedder.embed_video(encode(tmp_path / "one.mp4", [face(97).resize(size)]))
    check_rows(one, 1)
    few = embedder.embed_video(encode(tmp_path / "odd.mp4", [blank(*size), face(97).resize(size)] * 2))
    check_rows(few, 4)


def test_tracker_follows_overlap_then_reacquires():
    big, small, other = np.array([[0, 0, 100, 100]], np.float32), [[10, 10, 40, 40]], [[300, 0, 500, 200]]
    tracker = FaceTracker(640, 360)
    assert tracker.update(np.array(small + other, np.float32)) == 1          # largest (and central enough)
    assert tracker.update(np.array([[310, 5, 505, 205]] + [[0, 0, 390, 390]], np.float32)) == 0  # by overlap
    assert tracker.update(np.zeros((0, 4), np.float32)) is None
    for _ in range(9):                                                        # lost long enough: pick again
        assert tracker.update(big) is None
    assert tracker.update(big) == 0


def test_seeded_random_weights_are_deterministic():
    a, b, c = random_state_dict(3), random_state_dict(3), random_state_dict(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv2d_1a.conv.weight"], c["conv2d_1a.conv.weight"])


def test_shared_media_row_per_decoded_frame(embedder, shared_media):
    path = os.path.join(shared_media, "mouth_crop_96px_16khz.mp4")   # a mouth close-up: no whole face
    if not os.path.exists(path):
        pytest.skip(f"{path} is absent")
    rows = embedder.embed_video(path)
    check_rows(rows, len(frame_times(path)))
    np.testing.assert_array_equal(rows["time"], frame_times(path))


def run_stage(root, monkeypatch, fail_on: str | None = None) -> None:
    """The stage in `root`; with `fail_on`, it dies when that video comes up (a killed run)."""
    if fail_on:
        original = visual.FaceNetExtractor.file_rows

        def dying(self, video):
            if fail_on in video.path:
                raise KeyboardInterrupt
            return original(self, video)
        monkeypatch.setattr(visual.FaceNetExtractor, "file_rows", dying)
    try:
        extract(root, "facenet", monkeypatch)
    finally:
        monkeypatch.undo()


@pytest.mark.slow
def test_resume_after_kill_is_byte_identical(tmp_path, monkeypatch):
    media = tmp_path / "media"
    media.mkdir()
    videos = {"a": [face(128)] * 3, "b": [blank(128, 96)] * 2, "c": [two_faces(128, 96)] * 3}
    paths = {name: encode(media / f"{name}.mp4", frames) for name, frames in videos.items()}
    params = {"facenet": {"weights": "random", "seed": 0, "detect_size": 640, "min_face": 20, "margin": 20,
                          "detect_every": 1, "batch_size": 2, "keep_pooled": False, "device": "cpu", "stores": 1,
                          "workers": 1}}
    for run in ("whole", "killed"):
        make_project(tmp_path / run, params, [{"video_id": name, "path": paths[name]} for name in "ab"]
                     + [{"video_id": "c_left", "path": paths["c"], "person": "left"}])
    run_stage(tmp_path / "whole", monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_stage(tmp_path / "killed", monkeypatch, fail_on="c.mp4")
    assert FeatureReader(str(tmp_path / "killed" / OUT_DIR)).videos == ["a", "b"]
    run_stage(tmp_path / "killed", monkeypatch)

    assert tree_digest(str(tmp_path / "whole" / OUT_DIR)) == tree_digest(str(tmp_path / "killed" / OUT_DIR))
    reader = FeatureReader(str(tmp_path / "whole" / OUT_DIR))
    assert reader.videos == ["a", "b", "c_left"] and reader.length("a") == 3
    assert reader.rows("a", columns=("valid",))["valid"].sum() >= 2
    assert reader.provenance["extractor"] == visual.FaceNetExtractor.version


# ---------------------------------------------------------------- detect and track (visual.detect_every)

# A real face (a passer-by in the street-crowd fixture, about 75x90 px) with some margin: the O-net is
# as sure of it as of faces in real video, where drawn faces score 0.6-0.9 frame to frame.
REAL_FACE = Image.open(Path(__file__).parent / "fixtures" / "faces" / "crowd_full_resolution_crop.jpg").crop((22, 14, 136, 152))


def moving_face(i: int, step: int = 8) -> Image.Image:
    canvas = blank(320, 240)
    canvas.paste(REAL_FACE, (20 + step * i, 50))
    return canvas


def cascade_frames(embedder: FaceTrackEmbedder, monkeypatch) -> list[np.ndarray]:
    """Records the frames the full cascade runs on (`_detect` is the embedder's only way to it)."""
    seen: list[np.ndarray] = []
    detect = embedder._detect
    monkeypatch.setattr(embedder, "_detect", lambda images: seen.extend(images) or detect(images))
    return seen


def test_tracking_follows_a_moving_face_between_detections(tmp_path, monkeypatch):
    path = encode(tmp_path / "moving.mp4", [moving_face(i) for i in range(12)])
    every = FaceTrackEmbedder(random_state_dict(0), "cpu").embed_video(path)
    tracked_embedder = FaceTrackEmbedder(random_state_dict(0), "cpu", detect_every=6)
    cascades = cascade_frames(tracked_embedder, monkeypatch)
    tracked = tracked_embedder.embed_video(path)
    check_rows({**tracked, "pooled": np.zeros((12, 1792))}, 12)
    assert every["valid"].all() and tracked["valid"].all()
    assert len(cascades) < 6                      # frames 0 and 6, and at most a re-detection or two
    centres = (tracked["box"][:, 0] + tracked["box"][:, 2]) / 2
    np.testing.assert_allclose(centres, (every["box"][:, 0] + every["box"][:, 2]) / 2, atol=8)
    assert np.all(np.diff(centres) > 0)          # it moves right with the face, 8 px a frame
    cosine = (every["embedding"] * tracked["embedding"]).sum(1)
    assert cosine.min() > 0.99


def test_tracking_redetects_when_the_face_vanishes_and_comes_back(tmp_path, monkeypatch):
    frames = [moving_face(i) for i in range(4)] + [blank(320, 240)] * 4 + [moving_face(i) for i in (8, 9, 10, 11)]
    path = encode(tmp_path / "gone.mp4", frames)
    every = FaceTrackEmbedder(random_state_dict(0), "cpu").embed_video(path)
    embedder = FaceTrackEmbedder(random_state_dict(0), "cpu", detect_every=50)   # only frame 0 is due
    cascades = cascade_frames(embedder, monkeypatch)
    tracked = embedder.embed_video(path)
    expected = np.array([True] * 4 + [False] * 4 + [True] * 4)
    np.testing.assert_array_equal(every["valid"], expected)
    np.testing.assert_array_equal(tracked["valid"], expected)
    assert not tracked["embedding"][~expected].any()
    # On the blank frames the cascade runs once, when tracking loses the face (frame 4); on frames 5-7
    # the O-net finds nothing where it was, and at frame 8 it does, so the cascade runs there again.
    assert sum(frame.std(axis=(0, 1)).max() < 3 for frame in cascades) == 1 and len(cascades) < 8


@pytest.mark.slow
def test_detect_every_1_is_detection_on_every_frame(tmp_path, monkeypatch):
    """k=1 never tracks and gives the rows of the cascade + tracker + crop + embedding on each frame."""
    path = encode(tmp_path / "mixed.mp4", [moving_face(i) for i in range(3)] + [blank(320, 240), two_faces(160, 120).resize((320, 240))])
    embedder = FaceTrackEmbedder(random_state_dict(0), "cpu", detect_every=1)
    monkeypatch.setattr(embedder.detector, "track", lambda *a: pytest.fail("k=1 must not track"))
    rows = embedder.embed_video(path)
    frames = list(embedder._frames(path))
    detections = embedder._detect([small for _, _, small, _ in frames])
    tracker = FaceTracker(320, 240)
    for row, (_, full, _, scale), (found, probs, points) in zip(range(5), frames, detections):
        chosen = tracker.update(found * scale)
        assert rows["valid"][row] == (chosen is not None)
        if chosen is not None:
            np.testing.assert_array_equal(rows["box"][row], found[chosen] * scale)
            assert rows["prob"][row] == probs[chosen]
            np.testing.assert_array_equal(rows["landmarks"][row], points[chosen].reshape(10) * scale)
            embedding, _ = embedder._embed([crop_face(full, found[chosen] * scale, embedder.margin)])
            np.testing.assert_allclose(rows["embedding"][row], embedding[0], atol=1e-6)
    with pytest.raises(ValueError):
        FaceTrackEmbedder(random_state_dict(0), "cpu", detect_every=0)
