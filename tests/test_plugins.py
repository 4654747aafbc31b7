"""The extractor registry (avfusion/extractors.py) through the extraction runner, on real encoded videos
made here: the store contract for a plug-in (rows = frames, valid, column names, resume, skip), the
expression extractor on the facenet store's boxes, the audio validity mask from vad, and the
`extract@<name>` foreach stage under real dvc."""
from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import LOOK, REPO, dvc, encode_video, make_pipeline_repo, run, stages_run, tone, tree_digest, write_manifest
from avfusion.demo import draw_face
from avfusion.errors import UserError
from avfusion.extract import features_dir, run_stage, skip_report
from avfusion.extractors import (EXTRACTORS, EGeMAPSExtractor, ExpressionExtractor, MissingExtra, VadExtractor,
                                 store_name)
from avfusion.manifest import MANIFEST
from avfusion.media import frame_times
from avfusion.params import EXTRACTOR_NAMES, SCHEMA, load_params
from avfusion.store import FeatureReader

FIXTURE_WEIGHTS = os.path.join(REPO, "tests", "fixtures", "expression", "emotion_model.hdf5")


def blank(n: int, size: int = 32) -> list[Image.Image]:
    return [Image.new("RGB", (size, size), (10 * i, 40, 80)) for i in range(n)]


def faces(n: int, size: int = 160) -> list[Image.Image]:
    return [draw_face(size, LOOK, valence=0.5, eye_open=0.4 + 0.1 * (i % 5), center=(size / 2 + i, size / 2))
            for i in range(n)]


def project(tmp_path, monkeypatch, videos: dict[str, str]) -> None:
    """cwd = a project holding a manifest of `videos` (id -> path)."""
    monkeypatch.chdir(tmp_path)
    os.makedirs("data", exist_ok=True)
    write_manifest(MANIFEST, [{"video_id": vid, "path": path} for vid, path in videos.items()])


def test_every_registered_extractor_has_a_params_section():
    assert set(EXTRACTOR_NAMES) == set(EXTRACTORS) - {"facenet", "openl3"}
    # the two backbones keep their stores' names; the plug-ins are named after themselves
    assert [store_name(n) for n in EXTRACTORS] == ["visual", "audio", *EXTRACTOR_NAMES]
    with pytest.raises(UserError, match="unknown extractor 'landmark'"):
        store_name("landmark")
    for name, cls in EXTRACTORS.items():
        assert cls.name in SCHEMA, f"{name}: no params section {cls.name}"
        load_params(cls.name, os.path.join(REPO, "params.yaml"))
    assert set(load_params("features", os.path.join(REPO, "params.yaml"))["extractors"]) <= set(EXTRACTOR_NAMES)


def test_vad_store_contract_resume_and_skip(tmp_path, monkeypatch):
    videos = {"tone": encode_video(tmp_path / "tone.mp4", blank(12), tone(1.2)),
              "mute": encode_video(tmp_path / "mute.mp4", blank(8)),
              "bad": str(tmp_path / "bad.mp4")}
    with open(videos["bad"], "wb") as f:
        f.write(b"not a video at all" * 100)
    project(tmp_path, monkeypatch, videos)
    params = {"stores": 2, "workers": 1, "on_error": "skip"}
    run_stage(VadExtractor, params)

    reader = FeatureReader(features_dir("vad"))
    assert reader.provenance["columns"] == ["speech"]
    assert reader.provenance["computed"]["silero_vad"]
    for vid in ("tone", "mute"):
        rows = reader.rows(vid)
        times = frame_times(videos[vid])
        assert reader.length(vid) == len(times) and np.allclose(rows["time"], times)
        assert np.array_equal(rows["frame"], np.arange(len(times)))
    assert reader.rows("tone")["valid"].all()                  # the tone lasts the whole video
    assert not reader.rows("mute")["valid"].any()              # no audio stream
    assert reader.rows("tone")["embedding"].max() < 0.5        # a tone is not speech
    assert reader.length("bad") == 0
    report = yaml.safe_load(open(skip_report("vad")))["skipped"]
    assert [s["video_id"] for s in report] == ["bad"] and "cannot be opened" in report[0]["problem"]

    # a second run resumes: every store is complete, no video is read, the bytes stay the same
    before = tree_digest(features_dir("vad"))
    monkeypatch.setattr(VadExtractor, "rows", lambda self, video: pytest.fail(f"re-read {video['video_id']}"))
    run_stage(VadExtractor, params)
    assert tree_digest(features_dir("vad")) == before


def test_a_bad_video_stops_the_stage_with_one_line(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    os.makedirs(tmp_path / "data")
    write_manifest(str(tmp_path / MANIFEST), [{"video_id": "bad", "path": str(bad)}])
    params = yaml.safe_load(open(os.path.join(REPO, "params.yaml")))
    with open(tmp_path / "params.yaml", "w") as f:
        yaml.safe_dump(params, f)
    env_run = run([sys.executable, "-m", "stages.extract", "mfcc"], cwd=str(tmp_path), check=False,
                  env={**os.environ, "PYTHONPATH": REPO, "DVC_NO_ANALYTICS": "1"})
    assert env_run.returncode == 1
    last = env_run.stderr.strip().splitlines()[-1]        # after the progress bars: one line, no traceback
    assert last.startswith("extract: store ") and "video bad" in last and "cannot be opened" in last
    assert "Traceback" not in env_run.stderr
    unknown = run([sys.executable, "-m", "stages.extract", "landmark"], cwd=str(tmp_path), check=False,
                  env={**os.environ, "PYTHONPATH": REPO})
    assert unknown.returncode == 1 and "unknown extractor 'landmark'" in unknown.stderr


def test_egemaps_without_opensmile_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "opensmile", None)           # import opensmile -> ImportError
    with pytest.raises(MissingExtra, match=r"pip install -e '\.\[opensmile\]'"):
        EGeMAPSExtractor({"stores": 1, "workers": 1, "on_error": "fail"}, "cpu")


def test_expression_reads_the_facenet_boxes(tmp_path, monkeypatch):
    from avfusion.expression import EXPRESSIONS, face_input, load_expression_model
    from avfusion.faces import FaceDetector, random_state_dict
    from avfusion.media import decode_video
    from avfusion.visual import FaceNetExtractor
    videos = {"face": encode_video(tmp_path / "face.mp4", faces(6) + blank(2, 160)),
              "none": encode_video(tmp_path / "none.mp4", blank(3, 160))}
    project(tmp_path, monkeypatch, videos)
    os.makedirs("data/weights")
    torch.save(random_state_dict(0), "data/weights/visual.pt")
    shutil.copy(FIXTURE_WEIGHTS, "data/weights/expression.hdf5")
    run_stage(FaceNetExtractor, load_params("visual", os.path.join(REPO, "params.yaml")) | {"stores": 2})

    # no second detection: the detector must not run while the expression store is written
    monkeypatch.setattr(FaceDetector, "__call__", lambda *a: pytest.fail("detected faces again"))
    params = load_params("expression", os.path.join(REPO, "params.yaml")) | {"stores": 2, "device": "cpu"}
    run_stage(ExpressionExtractor, params)

    visual, expression = FeatureReader(features_dir("visual")), FeatureReader(features_dir("expression"))
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


def test_expression_without_the_visual_store_says_so(tmp_path, monkeypatch):
    project(tmp_path, monkeypatch, {})
    params = {"weights": "fer", "batch_size": 8, "device": "cpu", "stores": 1, "workers": 1, "on_error": "fail"}
    with pytest.raises(UserError, match="run the visual"):
        ExpressionExtractor(params, "cpu").provenance()


def test_audio_validity_from_vad_rejects_a_loud_tone(tmp_path, monkeypatch):
    from avfusion.audio import OpenL3Extractor
    from avfusion.openl3 import write_random_weights
    monkeypatch.chdir(tmp_path)
    os.makedirs("data/weights")
    write_random_weights("data/weights/audio.h5", "mel128", 512, 0)
    path = encode_video(tmp_path / "tone.mp4", blank(10), tone(1.0, amplitude=0.5))
    video = {"video_id": "tone", "path": path}
    params = load_params("audio", os.path.join(REPO, "params.yaml"))
    results = {}
    for valid_from in ("level", "vad"):
        extractor = OpenL3Extractor(params | {"valid_from": valid_from, "device": "cpu"}, "cpu")
        extractor.load()
        results[valid_from] = extractor.rows(video)
        assert ("valid_from" in extractor.provenance()) == (valid_from == "vad")   # level: stores unchanged
    assert results["level"]["valid"].all()          # loud enough for the level gate ...
    assert not results["vad"]["valid"].any()        # ... but not a voice
    assert not results["vad"]["embedding"].any()


@pytest.mark.slow
def test_foreach_stage_runs_only_the_listed_extractors(tmp_path):
    """Real dvc: the default list runs offline; adding extractors runs only their stages and the
    one-second `featureset` fingerprint, whose output does not change: train and evaluate stay."""
    repo = make_pipeline_repo(str(tmp_path / "repo"), {"features": {"extractors": ["vad"]}})
    first = dvc("repro", cwd=repo)
    assert {"extract@vad", "weights", "visual", "audio"} <= stages_run(first.stdout)
    assert FeatureReader(os.path.join(repo, "data", "features", "vad")).provenance["columns"] == ["speech"]
    run(["git", "add", "-A"], cwd=repo)
    run(["git", "commit", "-qm", "extracted"], cwd=repo)
    metrics = open(os.path.join(repo, "reports", "metrics.json")).read()
    added = dvc("exp", "run", "-S", "features.extractors=[vad,mfcc,landmarks]", cwd=repo)
    assert stages_run(added.stdout) == {"extract@mfcc", "extract@landmarks", "featureset"}, added.stdout
    assert open(os.path.join(repo, "reports", "metrics.json")).read() == metrics
    reader = FeatureReader(os.path.join(repo, "data", "features", "mfcc"))
    assert reader.provenance["columns"][0] == "mfcc_00" and reader.dim == 20
    landmarks = FeatureReader(os.path.join(repo, "data", "features", "landmarks"))
    visual = FeatureReader(os.path.join(repo, "data", "features", "visual"))
    assert landmarks.provenance["columns"][0] == "left_eye_x" and landmarks.dim == 10
    assert landmarks.videos == visual.videos and all(np.array_equal(
        landmarks.rows(v)["valid"], visual.rows(v)["valid"]) for v in visual.videos)


def test_landmarks_are_mtcnns_points_of_the_tracked_face(tmp_path, monkeypatch):
    """A real street frame, moving, then gone: the landmarks store holds the library's own five points
    (MTCNN.detect(..., landmarks=True) on the decoded frames) of the facenet store's face, normalised to
    its box, with detection on every frame and between detections (the tracker's O-net); it is written
    without detecting or decoding again."""
    from facenet_pytorch import MTCNN
    from PIL import ImageChops
    from torchvision.ops import box_iou

    from avfusion import extractors
    from avfusion.faces import FaceDetector, random_state_dict
    from avfusion.landmarks import NAMES, normalise_landmarks
    from avfusion.media import decode_video
    from avfusion.visual import FaceNetExtractor
    street = Image.open(os.path.join(REPO, "tests", "fixtures", "faces", "crowd_full_resolution_crop.jpg"))
    frames = [ImageChops.offset(street.convert("RGB"), 3 * i, i) for i in range(6)] + blank(2, 640)
    frames[-2:] = [frame.resize((640, 360)) for frame in frames[-2:]]
    project(tmp_path, monkeypatch, {"street": encode_video(tmp_path / "street.mp4", frames)})
    os.makedirs("data/weights")
    torch.save(random_state_dict(0), "data/weights/visual.pt")
    decoded = [frame.to_ndarray(format="rgb24") for _, frame in decode_video(str(tmp_path / "street.mp4"))]
    library = [MTCNN(device="cpu").detect(Image.fromarray(image), landmarks=True) for image in decoded]
    visual_params = load_params("visual", os.path.join(REPO, "params.yaml")) | {"stores": 1, "device": "cpu"}
    params = load_params("landmarks", os.path.join(REPO, "params.yaml")) | {"stores": 1}
    # Tolerance in shares of the face box's shorter side (~90 px here): detection on every frame gives the
    # library's points (0.01 px); the tracker's O-net crops its own square, so its boxes and points move
    # (measured here: points up to 0.15 of the box off, boxes at IoU 0.74-0.96 with the detected ones).
    for detect_every, tolerance in ((1, 1e-4), (3, 0.2)):
        run_stage(FaceNetExtractor, visual_params | {"detect_every": detect_every})
        with monkeypatch.context() as forbid:
            forbid.setattr(FaceDetector, "__call__", lambda *a, **k: pytest.fail("detected faces again"))
            forbid.setattr(FaceDetector, "track", lambda *a, **k: pytest.fail("tracked faces again"))
            forbid.setattr(extractors.media, "decode_video", lambda *a: pytest.fail("decoded again"))
            run_stage(extractors.LandmarksExtractor, params)
        store = FeatureReader(features_dir("landmarks"))
        assert store.provenance["columns"] == NAMES and store.dim == 10
        assert store.provenance["boxes"]["params"]["detect_every"] == detect_every
        faces = FeatureReader(features_dir("visual")).rows("street", ("valid", "box", "landmarks", "time"))
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
