"""The extractor registry (avfusion/extraction/registry.py) through the extraction runner, on real
encoded videos made here: the store contract for a plug-in (rows = frames, valid, column names, resume,
skip), the expression extractor on the facenet store's boxes, the audio validity mask from vad, and the
extract@<name> / faces@<name> foreach stages under real dvc."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from avfusion.errors import UserError
from avfusion.extraction.base import Video
from avfusion.extraction.registry import get, names
from avfusion.extractors.egemaps import EGeMAPSExtractor
from avfusion.extractors.vad import VadExtractor
from avfusion.params import SECTIONS, load_params
from avfusion.sources.demo import draw_face
from avfusion.sources.media import frame_times
from avfusion.store.reader import FeatureReader

from conftest import (
    LOOK,
    REPO,
    dvc,
    encode_video,
    extract,
    make_pipeline_repo,
    make_project,
    run,
    stages_run,
    tone,
    tree_digest,
)

PARAMS = os.path.join(REPO, "params.yaml")
FIXTURE_WEIGHTS = os.path.join(REPO, "tests", "fixtures", "expression", "emotion_model.hdf5")


def blank(n: int, size: int = 32) -> list[Image.Image]:
    return [Image.new("RGB", (size, size), (10 * i, 40, 80)) for i in range(n)]


def faces(n: int, size: int = 160) -> list[Image.Image]:
    return [draw_face(size, LOOK, valence=0.5, eye_open=0.4 + 0.1 * (i % 5), center=(size / 2 + i, size / 2))
            for i in range(n)]


def project(root, videos: dict[str, str], **sections) -> str:
    """A project holding the real params.yaml (with `sections` changed) and a manifest of `videos`."""
    params = yaml.safe_load(open(PARAMS))
    for name, changes in sections.items():
        params[name].update(changes)
    return make_project(root, params, [{"video_id": vid, "path": path} for vid, path in videos.items()])


def test_every_registered_extractor_has_a_params_section_and_its_own_store():
    params = yaml.safe_load(open(PARAMS))
    assert set(params) - set(SECTIONS) == set(names())
    for name in names():
        assert get(name).name == name
        load_params(name, PARAMS)
    with pytest.raises(UserError, match="unknown extractor 'landmark' \\(known: clip, egemaps, emotieff, "):
        get("landmark")
    listed = load_params("features", PARAMS)
    assert not get(listed["extractors"][0]).reads_faces


def test_vad_store_contract_resume_and_skip(tmp_path, monkeypatch):
    videos = {"tone": encode_video(tmp_path / "tone.mp4", blank(12), tone(1.2)),
              "mute": encode_video(tmp_path / "mute.mp4", blank(8)),
              "bad": encode_video(tmp_path / "bad.mp4", blank(8), tone(0.8))}
    root = project(tmp_path / "project", videos, vad={"stores": 2, "on_error": "skip"})
    # the dataset stage saw a good file; it broke afterwards (a disk error, a half-copied replacement)
    with open(videos["bad"], "wb") as f:
        f.write(b"not a video at all" * 100)

    reader = extract(root, "vad", monkeypatch)
    assert reader.provenance["columns"] == ["speech"]
    assert reader.provenance["computed"]["silero_vad"]
    for vid in ("tone", "mute"):
        rows = reader.rows(vid)
        times = frame_times(videos[vid])
        assert reader.length(vid) == len(times) and np.array_equal(rows["time"], times)
        assert np.array_equal(rows["frame"], np.arange(len(times)))
    assert reader.rows("tone")["valid"].all()                  # the tone lasts the whole video
    assert not reader.rows("mute")["valid"].any()              # no audio stream
    assert reader.rows("tone")["embedding"].max() < 0.5        # a tone is not speech
    assert reader.length("bad") == 0
    report = yaml.safe_load(open(os.path.join(root, "reports", "skipped_vad.json")))["skipped"]
    assert [s["video_id"] for s in report] == ["bad"] and "cannot be opened" in report[0]["problem"]

    # a second run resumes: every store is complete, no video is read, the bytes stay the same
    before = tree_digest(reader.directory)
    monkeypatch.setattr(VadExtractor, "rows", lambda self, video: pytest.fail(f"re-read {video.id}"))
    extract(root, "vad", monkeypatch)
    assert tree_digest(reader.directory) == before


def test_a_bad_video_stops_the_stage_with_one_line(tmp_path):
    good = encode_video(tmp_path / "bad.mp4", blank(4), tone(0.4))
    root = project(tmp_path / "project", {"bad": good}, features={"extractors": ["mfcc"]})
    with open(good, "wb") as f:
        f.write(b"\x00" * 1000)
    env = {**os.environ, "PYTHONPATH": REPO, "DVC_NO_ANALYTICS": "1"}
    failed = run([sys.executable, "-m", "stages.extract", "mfcc"], cwd=root, check=False, env=env)
    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]        # after the progress bars: one line, no traceback
    assert last.startswith("mfcc: store ") and "video bad" in last and "cannot be opened" in last
    assert "Traceback" not in failed.stderr
    unknown = run([sys.executable, "-m", "stages.extract", "landmark"], cwd=root, check=False, env=env)
    assert unknown.returncode == 1 and "unknown extractor 'landmark'" in unknown.stderr
    listed_elsewhere = run([sys.executable, "-m", "stages.extract", "landmarks"], cwd=root, check=False, env=env)
    assert listed_elsewhere.stderr.strip().splitlines() == [
        "landmarks: params.yaml: landmarks reads the faces of the facenet store: list it in features.faces"]


def test_egemaps_without_opensmile_names_the_extra(monkeypatch, tmp_path):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "opensmile" else real(name, *a))
    assert EGeMAPSExtractor.available() == "the egemaps extractor needs openSMILE: pip install -e '.[opensmile]'"
    root = project(tmp_path, {})
    with pytest.raises(UserError, match=r"pip install -e '\.\[opensmile\]'"):
        extract(root, "egemaps", monkeypatch)


def test_expression_reads_the_facenet_boxes(tmp_path, monkeypatch):
    from avfusion.extractors.expression import EXPRESSIONS, face_input, load_expression_model
    from avfusion.faces.mtcnn import FaceDetector
    from avfusion.sources.media import decode_video
    videos = {"face": encode_video(tmp_path / "face.mp4", faces(6) + blank(2, 160)),
              "none": encode_video(tmp_path / "none.mp4", blank(3, 160))}
    root = project(tmp_path / "project", videos, facenet={"stores": 2},
                   expression={"stores": 2, "device": "cpu", "weights": FIXTURE_WEIGHTS})
    extract(root, "facenet", monkeypatch)

    # no second detection: the detector must not run while the expression store is written
    monkeypatch.setattr(FaceDetector, "__call__", lambda *a: pytest.fail("detected faces again"))
    expression = extract(root, "expression", monkeypatch)

    visual = FeatureReader(os.path.join(root, "data", "features", "facenet"))
    assert expression.provenance["columns"][:7] == list(EXPRESSIONS)
    assert expression.provenance["columns"][7:9] == ["feature_000", "feature_001"] and expression.dim == 135
    assert expression.provenance["boxes"]["extractor"] == visual.provenance["extractor"]
    faces_rows = visual.rows("face", ("valid", "box", "time"))
    rows = expression.rows("face")
    assert faces_rows["valid"][:6].sum() >= 5 and not faces_rows["valid"][6:].any()
    assert np.array_equal(rows["valid"], faces_rows["valid"]) and np.allclose(rows["time"], faces_rows["time"])
    assert not rows["embedding"][~rows["valid"]].any()
    np.testing.assert_allclose(rows["embedding"][rows["valid"], :7].sum(axis=1), 1, atol=1e-5)
    # the stored rows are the network on fer's crop of each stored box
    model = load_expression_model(FIXTURE_WEIGHTS)
    frames = [frame.to_ndarray(format="rgb24") for _, frame in decode_video(videos["face"])]
    i = int(np.flatnonzero(faces_rows["valid"])[0])
    with torch.inference_mode():
        probs, features = model(torch.from_numpy(face_input(frames[i], faces_rows["box"][i]))[None, None])
    np.testing.assert_allclose(rows["embedding"][i], torch.cat([probs, features], 1)[0].numpy(), atol=1e-5)
    assert expression.length("none") == 3 and not expression.rows("none")["valid"].any()


def test_expression_without_the_facenet_store_says_so(tmp_path, monkeypatch):
    root = project(tmp_path, {})
    monkeypatch.chdir(root)
    with pytest.raises(UserError, match="run the facenet stage first"):
        get("expression")(load_params("expression"), "cpu").provenance()


def test_audio_validity_from_vad_rejects_a_loud_tone(tmp_path, monkeypatch):
    from avfusion.extractors.openl3 import OpenL3Extractor
    from avfusion.openl3.weights import write_random_weights
    path = encode_video(tmp_path / "tone.mp4", blank(10), tone(1.0, amplitude=0.5))
    video = Video(id="tone", path=path, times=frame_times(path))
    weights = tmp_path / "openl3.h5"
    write_random_weights(str(weights), "mel128", 512, 0)
    params = load_params("openl3", PARAMS)
    results = {}
    for valid_from in ("level", "vad"):
        extractor = OpenL3Extractor(params | {"valid_from": valid_from, "device": "cpu"}, "cpu")
        extractor.weights_dir = str(tmp_path)
        extractor.ensure_loaded()
        results[valid_from] = extractor.rows(video)
        assert ("valid_from" in extractor.provenance()) == (valid_from == "vad")   # level: stores unchanged
    assert results["level"]["valid"].all()          # loud enough for the level gate ...
    assert not results["vad"]["valid"].any()        # ... but not a voice
    assert not results["vad"]["embedding"].any()


@pytest.mark.slow
def test_foreach_stages_run_only_the_listed_extractors(tmp_path):
    """Real dvc: the default list runs offline; adding extractors runs only their stages and the
    one-second `featureset` fingerprint, whose output does not change: train and evaluate stay."""
    repo = make_pipeline_repo(str(tmp_path / "repo"), {"features": {"extractors": ["vad"], "faces": []}})
    first = dvc("repro", cwd=repo)
    assert {"extract@vad", "facenet", "openl3"} <= stages_run(first.stdout)
    assert FeatureReader(os.path.join(repo, "data", "features", "vad")).provenance["columns"] == ["speech"]
    run(["git", "add", "-A"], cwd=repo)
    run(["git", "commit", "-qm", "extracted"], cwd=repo)
    metrics = open(os.path.join(repo, "reports", "metrics.json")).read()
    added = dvc("exp", "run", "-S", "features.extractors=[vad,mfcc]", "-S", "features.faces=[landmarks]", cwd=repo)
    assert stages_run(added.stdout) == {"extract@mfcc", "faces@landmarks", "featureset"}, added.stdout
    assert open(os.path.join(repo, "reports", "metrics.json")).read() == metrics
    reader = FeatureReader(os.path.join(repo, "data", "features", "mfcc"))
    assert reader.provenance["columns"][0] == "mfcc_00" and reader.dim == 20
    landmarks = FeatureReader(os.path.join(repo, "data", "features", "landmarks"))
    visual = FeatureReader(os.path.join(repo, "data", "features", "facenet"))
    assert landmarks.provenance["columns"][0] == "left_eye_x" and landmarks.dim == 10
    assert landmarks.videos == visual.videos and all(np.array_equal(
        landmarks.rows(v)["valid"], visual.rows(v)["valid"]) for v in visual.videos)


@pytest.mark.slow
def test_landmarks_are_mtcnns_points_of_the_tracked_face(tmp_path, monkeypatch):
    """A real street frame, moving, then gone: the landmarks store holds the library's own five points
    (MTCNN.detect(..., landmarks=True) on the decoded frames) of the facenet store's face, normalised to
    its box, with detection on every frame and between detections (the tracker's O-net); it is written
    without detecting or decoding again."""
    from facenet_pytorch import MTCNN
    from PIL import ImageChops
    from torchvision.ops import box_iou

    from avfusion.extractors.landmarks import NAMES, normalise_landmarks
    from avfusion.faces.mtcnn import FaceDetector
    from avfusion.sources import media
    from avfusion.sources.media import decode_video
    street = Image.open(os.path.join(REPO, "tests", "fixtures", "faces", "crowd_full_resolution_crop.jpg"))
    frames = [ImageChops.offset(street.convert("RGB"), 3 * i, i) for i in range(6)] + blank(2, 640)
    frames[-2:] = [frame.resize((640, 360)) for frame in frames[-2:]]
    video = encode_video(tmp_path / "street.mp4", frames)
    decoded = [frame.to_ndarray(format="rgb24") for _, frame in decode_video(video)]
    library = [MTCNN(device="cpu").detect(Image.fromarray(image), landmarks=True) for image in decoded]
    # Tolerance in shares of the face box's shorter side (~90 px here): detection on every frame gives the
    # library's points (0.01 px); the tracker's O-net crops its own square, so its boxes and points move
    # (measured here: points up to 0.15 of the box off, boxes at IoU 0.74-0.96 with the detected ones).
    for detect_every, tolerance in ((1, 1e-4), (3, 0.2)):
        root = project(tmp_path / f"every-{detect_every}", {"street": video},
                       facenet={"stores": 1, "device": "cpu", "detect_every": detect_every}, landmarks={"stores": 1})
        extract(root, "facenet", monkeypatch)
        with monkeypatch.context() as forbid:
            forbid.setattr(FaceDetector, "__call__", lambda *a, **k: pytest.fail("detected faces again"))
            forbid.setattr(FaceDetector, "track", lambda *a, **k: pytest.fail("tracked faces again"))
            forbid.setattr(media, "decode_video", lambda *a: pytest.fail("decoded again"))
            store = extract(root, "landmarks", forbid)
        assert store.provenance["columns"] == NAMES and store.dim == 10
        assert store.provenance["boxes"]["params"]["detect_every"] == detect_every
        faces = FeatureReader(os.path.join(root, "data", "features", "facenet")).rows(
            "street", ("valid", "box", "landmarks", "time"))
        rows = store.rows("street")
        assert faces["valid"][:6].all() and not faces["valid"][6:].any()
        assert np.array_equal(rows["valid"], faces["valid"]) and np.array_equal(rows["time"], faces["time"])
        assert not rows["embedding"][6:].any()
        for i in range(6):
            boxes, _, points = library[i]
            j = int(box_iou(torch.as_tensor(faces["box"][i:i + 1]), torch.as_tensor(boxes.astype(np.float32))).argmax())
            side = (faces["box"][i, 2:] - faces["box"][i, :2]).min()
            error = np.abs(faces["landmarks"][i].reshape(5, 2) - points[j]).max() / side
            assert error <= tolerance, f"detect_every {detect_every}, frame {i}: a point {error:.3g} of the box off"
            theirs = normalise_landmarks(points[j:j + 1], faces["box"][i:i + 1])[0]
            np.testing.assert_allclose(rows["embedding"][i], theirs, atol=tolerance + 1e-5)   # side <= width, height
