"""The face encoders emotieff, clip and irse50 against their reference code, on real faces (a street-crowd
frame, encoded with H.264 here and decoded; its faces found by MTCNN), and through the runner and
`avfusion predict` on the facenet store's boxes.

References: EmotiEffLib's own ONNX inference (the emotiefflib wheel and OpenCV, installed with pip into
a cached folder, run in a subprocess: the wheel's top-level `tests` and `models` packages would shadow
ours), open_clip's `encode_image` with its own transform, and the LFAN authors' backbone and data
pipeline transcribed in tests/fixtures/irse50/abaw2_reference.py (their repository cannot be installed).
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageChops

from avfusion.errors import WeightsError
from avfusion.extraction.faces import pixel_box
from avfusion.extractors import clip, emotieff, irse50
from avfusion.params import load_params
from avfusion.sources.media import decode_video

from conftest import REPO, encode_video

FIXTURES = os.path.join(REPO, "tests", "fixtures")
PARAMS = os.path.join(REPO, "params.yaml")
EMOTIEFFLIB = "emotiefflib==1.1.1"


@pytest.fixture(scope="session")
def emotiefflib(request, tmp_path_factory) -> str:
    """A folder holding the emotiefflib wheel and OpenCV (its ONNX branch's resize), for PYTHONPATH;
    installed once into pytest's cache (no dependencies: the rest is this environment's)."""
    cache = request.config.cache         # None under -p no:cacheprovider: then once per session
    folder = str(cache.mkdir("emotiefflib-1.1.1") if cache else tmp_path_factory.mktemp("emotiefflib"))
    if not os.path.isdir(os.path.join(folder, "emotiefflib")) or not os.path.isdir(os.path.join(folder, "cv2")):
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", folder,
                               EMOTIEFFLIB, "opencv-python-headless"], capture_output=True, text=True)
        if proc.returncode:
            pytest.skip(f"cannot install {EMOTIEFFLIB} with pip: {(proc.stderr.strip().splitlines() or [''])[-1]}")
    return folder


@pytest.fixture(scope="module")
def street(tmp_path_factory) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Real faces: two frames of a street crowd (40-90 px faces), through H.264 and back, with MTCNN's
    boxes: (decoded RGB frames, boxes [faces, 4] per frame)."""
    from facenet_pytorch import MTCNN
    crowd = Image.open(os.path.join(FIXTURES, "faces", "crowd_full_resolution_crop.jpg")).convert("RGB")
    path = encode_video(tmp_path_factory.mktemp("street") / "street.mp4", [crowd, ImageChops.offset(crowd, 7, 3)])
    frames = [frame.to_ndarray(format="rgb24") for _, frame in decode_video(path)]
    detector = MTCNN(device="cpu")
    boxes = [detector.detect(Image.fromarray(frame))[0].astype(np.float32) for frame in frames]
    assert all(len(b) >= 4 for b in boxes)
    return frames, boxes


def faces_of(street) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(frame, box) for frame, boxes in zip(*street) for box in boxes]


def library_crop(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The face as EmotiEffLib's examples cut it: `frame[y1:y2, x1:x2]` of `box.astype(int)`."""
    x1, y1, x2, y2 = box.astype(int)
    return frame[y1:y2, x1:x2]


def run_library(emotiefflib: str, code: str, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": emotiefflib}
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


# ---------------------------------------------------------------- emotieff

PREPROCESS = """
import sys, types
import numpy as np
import emotiefflib.facial_analysis as library
faces = np.load(sys.argv[1])
out = {}
for name in sys.argv[3:]:
    recognizer = types.SimpleNamespace()
    library.EmotiEffLibRecognizerBase.__init__(recognizer, name)      # its size, mean and std for the name
    out[name] = np.concatenate([library.EmotiEffLibRecognizerOnnx._preprocess(recognizer, faces[f])
                                for f in faces.files])
np.savez(sys.argv[2], **out)
"""


@pytest.mark.slow          # the library's import takes ~3 s
def test_emotieff_input_is_the_librarys(tmp_path, street, emotiefflib):
    """Crop, size, OpenCV's resize, colour order and normalisation of every model, bit for bit."""
    faces = faces_of(street)
    np.savez(tmp_path / "faces.npz", *[library_crop(frame, box) for frame, box in faces])
    run_library(emotiefflib, PREPROCESS, str(tmp_path / "faces.npz"), str(tmp_path / "out.npz"), *emotieff.MODELS)
    theirs = np.load(tmp_path / "out.npz")
    for name, model in emotieff.MODELS.items():
        mine = np.stack([emotieff.face_input(frame, box, model) for frame, box in faces])
        assert mine.shape == (len(faces), 3, model.size, model.size)
        np.testing.assert_array_equal(mine, theirs[name], err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("name", emotieff.MODELS)
def test_emotieff_outputs_are_the_librarys(tmp_path, street, emotiefflib, name):
    """The extractor's rows (batched) against EmotiEffLib's ONNX inference on the same file: the class
    probabilities, raw valence and arousal, and the features (the final Gemm's input)."""
    model, path = emotieff.MODELS[name], str(tmp_path / f"{name}.onnx")
    emotieff.write_random_weights(path, name, seed=0)
    faces = faces_of(street)
    np.savez(tmp_path / "faces.npz", **{f"face_{i}": library_crop(frame, box) for i, (frame, box) in enumerate(faces)})
    run_library(emotiefflib, open(os.path.join(FIXTURES, "emotieff", "library_reference.py")).read(),
                name, path, str(tmp_path / "faces.npz"), str(tmp_path / "out.npz"))
    theirs = np.load(tmp_path / "out.npz")
    extractor = emotieff.EmotiEffExtractor({**load_params("emotieff", PARAMS), "model": name, "batch_size": 3}, "cpu")
    extractor.weights_dir = str(tmp_path)
    extractor.ensure_loaded()
    inputs = np.stack([emotieff.face_input(frame, box, model) for frame, box in faces])
    mine = np.concatenate([extractor.encode(inputs[i:i + 3]) for i in range(0, len(inputs), 3)])
    expected = np.concatenate([theirs["scores"], theirs["features"]], axis=1)
    assert mine.shape == expected.shape == (len(faces), extractor.dim)
    assert np.abs(mine - expected).max() < 1e-4
    probabilities = mine[:, :len(emotieff.CLASSES)]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert extractor.names[:8] == list(emotieff.CLASSES)
    assert ("valence" in extractor.names) == model.valence_arousal == (theirs["scores"].shape[1] == 10)
    # the faces differ, and so do the outputs: the check is not passed by a constant
    features = mine[:, -model.features:]
    assert (features.std(axis=0) > 1e-3 * np.abs(features).mean()).mean() > 0.5


@pytest.mark.slow
def test_emotieff_official_weights_are_fetched_and_checked(tmp_path, monkeypatch):
    """`weights: official` downloads the model's file (here from a real HTTP server on 127.0.0.1) and keeps
    it only when its SHA-256 is the pinned one."""
    import dataclasses
    import functools
    import http.server
    import threading

    from avfusion.paths import file_sha256
    served = tmp_path / "served"
    served.mkdir()
    emotieff.write_random_weights(str(served / "mbf_va_mtl.onnx"), "mbf_va_mtl", seed=0)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(emotieff, "RELEASE", f"http://127.0.0.1:{httpd.server_address[1]}/")
        params = {"model": "mbf_va_mtl", "weights": "official", "seed": 0}
        pinned = dataclasses.replace(emotieff.MODELS["mbf_va_mtl"], sha256=file_sha256(str(served / "mbf_va_mtl.onnx")))
        monkeypatch.setitem(emotieff.MODELS, "mbf_va_mtl", pinned)
        (tmp_path / "ok").mkdir()
        emotieff.EmotiEffExtractor.make_weights(params, str(tmp_path / "ok"))
        assert file_sha256(str(tmp_path / "ok" / "mbf_va_mtl.onnx")) == pinned.sha256
        monkeypatch.setitem(emotieff.MODELS, "mbf_va_mtl", dataclasses.replace(pinned, sha256="0" * 64))
        (tmp_path / "bad").mkdir()
        with pytest.raises(WeightsError, match=r"mbf_va_mtl.onnx: SHA-256 [0-9a-f]{64}, expected 0{64} \(emotieff.weights\)"):
            emotieff.EmotiEffExtractor.make_weights(params, str(tmp_path / "bad"))
        assert os.listdir(tmp_path / "bad") == []
    finally:
        httpd.shutdown()


def test_emotieff_refuses_another_onnx_file(tmp_path):
    other = str(tmp_path / "other.onnx")
    torch.onnx.export(torch.nn.Linear(4, 3).eval(), torch.zeros(1, 4), other, input_names=["input"], dynamo=False)
    with pytest.raises(WeightsError, match=r"^emotieff.weights: refused: .*not EmotiEffLib's enet_b0_8_va_mtl "
                                           r"ONNX file: its classifier is not 10 outputs of 1280 features"):
        emotieff.EmotiEffExtractor.make_weights({"model": "enet_b0_8_va_mtl", "weights": other, "seed": 0}, str(tmp_path))
    assert not os.path.exists(tmp_path / "enet_b0_8_va_mtl.onnx")


# ---------------------------------------------------------------- clip


@pytest.mark.slow
def test_clip_matches_open_clips_encode_image(tmp_path, street):
    """Rows against open_clip's CLIP model (ViT-B-16-quickgelu) with the same random weights loaded from
    the safetensors file by open_clip, and its own preprocessing transform on PIL crops."""
    import open_clip
    path = str(tmp_path / clip.FILE)
    clip.write_random_weights(path, "ViT-B-16-quickgelu", seed=0)
    extractor = clip.ClipExtractor({**load_params("clip", PARAMS), "batch_size": 4}, "cpu")
    extractor.weights_dir = str(tmp_path)
    extractor.ensure_loaded()
    faces = faces_of(street)
    inputs = np.stack([extractor.prepare(frame, box) for frame, box in faces])
    mine = np.concatenate([extractor.encode(inputs[i:i + 4]) for i in range(0, len(inputs), 4)])

    model, _, transform = open_clip.create_model_and_transforms("ViT-B-16-quickgelu")
    openai = open_clip.get_pretrained_cfg("ViT-B-16-quickgelu", "openai")       # what its defaults must be
    assert (openai["mean"], openai["std"]) == (open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    assert (openai["interpolation"], openai["resize_mode"]) == ("bicubic", "shortest")
    open_clip.load_checkpoint(model, path, strict=False)       # the file holds the vision tower only
    crops = [Image.fromarray(library_crop(frame, box)) for frame, box in faces]
    with torch.inference_mode():
        theirs = model.eval().encode_image(torch.stack([transform(c) for c in crops])).numpy()
    assert mine.shape == theirs.shape == (len(faces), 512)
    assert np.abs(mine - theirs).max() < 1e-4
    assert (theirs.std(axis=0) > 1e-3 * np.abs(theirs).mean()).mean() > 0.5


@pytest.mark.slow          # open_clip's import and a ViT-B/16: ~5 s
def test_clip_refuses_another_safetensors_file(tmp_path):
    from safetensors.torch import save_file
    other = str(tmp_path / "other.safetensors")
    save_file({"visual.conv1.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(WeightsError, match=r"^clip.weights: refused: not ViT-B-16-quickgelu's vision tower"):
        clip.ClipExtractor.make_weights({"model": "ViT-B-16", "weights": other, "seed": 0}, str(tmp_path))


# ---------------------------------------------------------------- irse50

def authors_code():
    sys.path.insert(0, os.path.join(FIXTURES, "irse50"))
    try:
        import abaw2_reference
    finally:
        sys.path.pop(0)
    return abaw2_reference


def test_irse50_input_is_the_authors(street):
    """48-px PIL resize, centre 40 px, [-1, 1]: their preprocessing.py then their evaluation transform."""
    reference = authors_code()
    faces = faces_of(street)
    crops = [Image.fromarray(library_crop(frame, box)) for frame, box in faces]
    theirs = reference.evaluation_transform()(reference.frame_matrix(crops)).numpy()
    mine = np.stack([irse50.face_input(frame, box) for frame, box in faces])
    assert mine.shape == (len(faces), 3, 40, 40)
    np.testing.assert_array_equal(mine, theirs)


@pytest.mark.slow
def test_irse50_matches_the_authors_backbone(tmp_path, street):
    """The embedding against their Backbone (with my_res50's output layer) on the same state dict, given
    as my_res50 saves it (`backbone.` keys and a `logits` head, a torch file) and read with weights_only."""
    from safetensors.torch import load_file
    irse50.write_random_weights(str(tmp_path / "random.safetensors"), seed=0)
    state = load_file(str(tmp_path / "random.safetensors"))
    theirs_file = str(tmp_path / "res50_ir.pth")
    torch.save({**{f"backbone.{k}": v for k, v in state.items()}, "logits.weight": torch.zeros(8, 512),
                "logits.bias": torch.zeros(8)}, theirs_file)
    irse50.IrSe50Extractor.make_weights({"weights": theirs_file, "seed": 0}, str(tmp_path))
    extractor = irse50.IrSe50Extractor({**load_params("irse50", PARAMS), "batch_size": 4}, "cpu")
    extractor.weights_dir = str(tmp_path)
    extractor.ensure_loaded()
    faces = faces_of(street)
    inputs = np.stack([irse50.face_input(frame, box) for frame, box in faces])
    mine = np.concatenate([extractor.encode(inputs[i:i + 4]) for i in range(0, len(inputs), 4)])
    network = authors_code().my_res50_backbone()
    network.load_state_dict(state)
    with torch.inference_mode():
        network.eval()
        theirs = network(torch.from_numpy(inputs)).numpy()
    assert mine.shape == theirs.shape == (len(faces), 512)
    assert np.abs(mine - theirs).max() < 1e-4
    np.testing.assert_allclose(np.linalg.norm(mine, axis=1), 1, atol=1e-5)
    assert (mine @ mine.T)[np.triu_indices(len(mine), 1)].max() < 0.99       # different faces, different embeddings


def test_irse50_refuses_another_network(tmp_path):
    other = str(tmp_path / "other.pt")
    torch.save({"conv.weight": torch.ones(2, 2)}, other)
    with pytest.raises(WeightsError, match=r"^irse50.weights: refused: not the IR-50 backbone of LFAN"):
        irse50.IrSe50Extractor.make_weights({"weights": other, "seed": 0}, str(tmp_path))
    assert not os.path.exists(tmp_path / irse50.FILE)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["clip", "irse50"])
def test_fp16_autocast_on_cuda_keeps_the_embedding(tmp_path, street, name):
    """The same batch on CUDA under fp16 autocast and on the CPU: the same embedding to fp16's precision."""
    cls = {"clip": clip.ClipExtractor, "irse50": irse50.IrSe50Extractor}[name]
    params = load_params(name, PARAMS)
    cls.make_weights(params, str(tmp_path))
    rows = {}
    for device in ("cpu", "cuda"):
        extractor = cls(params, device)
        extractor.weights_dir = str(tmp_path)
        extractor.ensure_loaded()
        rows[device] = extractor.encode(np.stack([extractor.prepare(frame, box) for frame, box in faces_of(street)]))
    assert extractor.precision == "cuda-fp16"
    cpu, cuda = rows["cpu"], rows["cuda"]
    cosine = (cpu * cuda).sum(1) / np.linalg.norm(cpu, axis=1) / np.linalg.norm(cuda, axis=1)
    assert cosine.min() > 0.999


def test_the_box_is_clipped_to_the_frame():
    assert pixel_box(np.array([-5.5, 3.7, 700.2, 50.9]), 640, 360) == (0, 3, 640, 50)
    assert pixel_box(np.array([639.5, 359.9, 650, 370]), 640, 360) == (639, 359, 640, 360)


# ---------------------------------------------------------------- through the runner and `avfusion predict`


@pytest.mark.slow
def test_stores_on_the_facenet_boxes_resume_skip_and_predict(tmp_path, monkeypatch):
    """Each encoder's store through the runner: one row per decoded frame, valid where facenet found the
    face, the network on that face where valid and 0 elsewhere, its weights' hash and facenet's in the
    provenance, no second detection, a video broken after the facenet stage skipped, a second run
    resuming without reading a video; then `avfusion predict` computes the same rows byte for byte."""
    from avfusion.app.predict import Predictor
    from avfusion.extraction.registry import get
    from avfusion.faces.mtcnn import FaceDetector
    from avfusion.learning.fusion import build_model
    from avfusion.learning.train import save_fold
    from avfusion.paths import file_sha256

    from conftest import extract, make_project, tone, tree_digest
    crowd = Image.open(os.path.join(FIXTURES, "faces", "crowd_full_resolution_crop.jpg")).convert("RGB")
    frames = [ImageChops.offset(crowd, 3 * i, i) for i in range(4)] + [Image.new("RGB", crowd.size, (40, 60, 80))] * 2
    video = encode_video(tmp_path / "street.mp4", frames, tone(0.6))
    broken = encode_video(tmp_path / "broken.mp4", frames[:3], tone(0.3))
    names = ("emotieff", "clip", "irse50")
    params = {name: {**load_params(name, PARAMS), "device": "cpu", "stores": 2, "on_error": "skip"}
              for name in ("facenet", "openl3", *names)}
    params["features"] = {"extractors": [], "faces": list(names)}
    root = make_project(tmp_path / "project", params, [{"video_id": "street", "path": video},
                                                      {"video_id": "broken", "path": broken}])
    upstream = {name: extract(root, name, monkeypatch) for name in ("facenet", "openl3")}
    with open(broken, "wb") as f:                  # broken after the facenet stage read it
        f.write(b"\x00" * 1000)
    with monkeypatch.context() as forbid:
        forbid.setattr(FaceDetector, "__call__", lambda *a, **k: pytest.fail("detected faces again"))
        stores = {name: extract(root, name, forbid) for name in names}

    faces = upstream["facenet"].rows("street", ("valid", "box", "time"))
    assert faces["valid"][:4].all() and not faces["valid"][4:].any()
    decoded = [frame.to_ndarray(format="rgb24") for _, frame in decode_video(video)]
    for name, store in stores.items():
        extractor = get(name)(params[name], "cpu")
        extractor.weights_dir = os.path.join(root, "data", "weights", name)
        extractor.ensure_loaded()
        weights = os.path.join(extractor.weights_dir, get(name).weight_files(params[name])[0])
        assert store.provenance["weights_sha256"] == file_sha256(weights)
        assert store.provenance["boxes"]["extractor"] == upstream["facenet"].provenance["extractor"]
        assert store.dim == extractor.dim and store.provenance.get("columns") == extractor.names
        rows = store.rows("street")
        assert np.array_equal(rows["valid"], faces["valid"]) and np.array_equal(rows["time"], faces["time"])
        assert np.array_equal(rows["frame"], np.arange(len(frames)))
        assert not rows["embedding"][4:].any()
        direct = extractor.encode(np.stack([extractor.prepare(decoded[i], faces["box"][i]) for i in range(4)]))
        np.testing.assert_allclose(rows["embedding"][:4], direct, atol=1e-5, err_msg=name)
        assert store.length("broken") == 0
        report = open(os.path.join(root, "reports", f"skipped_{name}.json")).read()
        assert '"video_id": "broken"' in report

    before = {name: tree_digest(store.directory) for name, store in stores.items()}
    with monkeypatch.context() as forbid:
        for name in names:
            forbid.setattr(get(name), "on_faces", lambda *a: pytest.fail("re-read a video"))
        for name in names:
            extract(root, name, forbid)
    assert {name: tree_digest(store.directory) for name, store in stores.items()} == before

    fusion = {"type": "concat", "dim": 8, "hidden": 4, "dropout": 0.1, "visual": ["facenet", *names], "audio": ["openl3"]}
    dim_visual = 512 + sum(store.dim for store in stores.values())
    model = build_model(fusion, 16, dim_visual, 512)
    save_fold(os.path.join(root, "models", "fold-0"), model.state_dict(),
              {"fold": 0, "fusion": fusion, "window": 16, "hop": 8, "dim_visual": dim_visual, "dim_audio": 512,
               "provenance": {name: reader.provenance for name, reader in {**upstream, **stores}.items()}})
    monkeypatch.chdir(tmp_path)
    _, predicted = Predictor(os.path.join(root, "models"), device="cpu").features(video)
    for name, store in stores.items():
        stored = store.rows("street", ("embedding", "valid", "time"))
        for column in ("embedding", "valid", "time"):
            np.testing.assert_array_equal(predicted[name][column], stored[column], err_msg=f"{name}.{column}")
