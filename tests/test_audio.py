"""The openl3 stage on real tiny videos: row alignment, no audio, silence, shared audio, resume."""
import os

import numpy as np
import pytest
from PIL import Image

from avfusion.extractors import openl3 as audio
from avfusion.openl3.weights import write_random_weights
from avfusion.sources import media
from avfusion.store.reader import FeatureReader

from conftest import encode_video, extract, tone, tree_digest
from conftest import make_project as project_with

OUT_DIR = os.path.join("data", "features", "openl3")
FPS, SECONDS, SR = 10, 3, 16000
PARAMS = {"weights": "random", "seed": 0, "input_repr": "mel128", "embedding_size": 512, "rate": 4,
          "silence_db": -60, "silence_window": 0.25, "batch_size": 16, "device": "cpu", "stores": 2, "workers": 1}


def write_video(path, with_audio=True, silence=None):
    """SECONDS of 32x32 H.264 at FPS, with a 16 kHz AAC tone-plus-noise track (silent over `silence`)."""
    sound = tone(SECONDS, SR, amplitude=0.2) + 0.01 * np.random.default_rng(0).standard_normal(SECONDS * SR)
    if silence:
        sound[int(silence[0] * SR):int(silence[1] * SR)] = 0.0
    frames = [Image.new("RGB", (32, 32), (8 * k % 256,) * 3) for k in range(FPS * SECONDS)]
    return encode_video(path, frames, sound.astype(np.float32) if with_audio else None, FPS, SR)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    return {"voice": write_video(root / "voice.mp4"),
            "mute": write_video(root / "mute.mp4", with_audio=False),
            "pause": write_video(root / "pause.mp4", silence=(1.0, 2.2))}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The file the stage makes for `weights: random, seed: 0` (AudioEmbedder tests use it directly)."""
    path = tmp_path_factory.mktemp("weights") / "openl3.h5"
    write_random_weights(path, "mel128", 512, seed=0)
    return str(path)


def make_project(root, videos, weights, **params):
    """A project laid out as the stage expects: params.yaml and a manifest with frame times."""
    return project_with(root, {"openl3": {**PARAMS, **params}},
                        [{"video_id": vid, "path": path, "fps": FPS, "frames": FPS * SECONDS,
                          "label_frames": FPS * SECONDS, "person": vid.rsplit("_", 1)[1] if "_" in vid else ""}
                         for vid, path in videos])


def run_stage(root, monkeypatch):
    return extract(root, "openl3", monkeypatch)


def test_rows_follow_frames_and_validity(tmp_path, monkeypatch, videos, weights):
    rows = [("voice", videos["voice"]), ("mute", videos["mute"]), ("pause", videos["pause"]),
            ("pause_left", videos["pause"]), ("pause_right", videos["pause"])]
    reader = run_stage(make_project(tmp_path, rows, weights), monkeypatch)
    assert reader.videos == sorted(v for v, _ in rows) and reader.dim == 512
    assert reader.provenance["weights_sha256"] and reader.provenance["params"]["rate"] == 4
    for vid, path in rows:
        got = reader.rows(vid)
        times = media.frame_times(path)
        assert len(got["embedding"]) == len(times) == FPS * SECONDS           # one row per decoded frame
        np.testing.assert_array_equal(got["frame"], np.arange(len(times)))
        np.testing.assert_array_equal(got["time"], times)
        assert (np.abs(got["embedding"]).sum(axis=1) > 0).tolist() == got["valid"].tolist()
    assert reader.rows("voice")["valid"].all()
    assert not reader.rows("mute")["valid"].any()                          # no audio stream: never a crash
    pause = reader.rows("pause")
    silent = (pause["time"] > 1.2) & (pause["time"] < 2.0)
    audible = (pause["time"] < 0.8) | (pause["time"] > 2.4)
    assert not pause["valid"][silent].any() and pause["valid"][audible].all()
    left, right = reader.rows("pause_left"), reader.rows("pause_right")        # shared audio: same rows
    np.testing.assert_array_equal(left["embedding"], pause["embedding"])
    np.testing.assert_array_equal(right["valid"], pause["valid"])


def test_rate_grid_maps_frames_to_the_nearest_embedding(videos, weights):
    times = media.frame_times(videos["voice"])
    dense = audio.AudioEmbedder(weights, "mel128", 512, rate=0, device="cpu")
    coarse = audio.AudioEmbedder(weights, "mel128", 512, rate=2, device="cpu")
    emb_dense, _ = dense.embed_video(videos["voice"], times)
    emb_coarse, valid = coarse.embed_video(videos["voice"], times)
    assert dense.windows == len(times) and coarse.windows == len(np.unique(np.round(times * 2)))
    assert valid.all() and emb_coarse.shape == emb_dense.shape
    on_grid = np.isclose(times * 2, np.round(times * 2))
    np.testing.assert_allclose(emb_coarse[on_grid], emb_dense[on_grid], rtol=1e-4, atol=1e-3)
    slot = np.round(times * 2)
    for s in np.unique(slot):                   # every frame takes its nearest grid point's embedding
        same = emb_coarse[slot == s]
        assert (same == same[0]).all()
    assert not np.array_equal(emb_coarse[slot == 0][0], emb_coarse[slot == 1][0])


@pytest.mark.slow
def test_resume_after_interruption_matches_a_full_run(tmp_path, monkeypatch, videos, weights):
    rows = [("a", videos["voice"]), ("b", videos["pause"]), ("c", videos["mute"]), ("d", videos["voice"])]
    full = run_stage(make_project(tmp_path / "full", rows, weights, stores=1), monkeypatch)

    calls = {"n": 0}
    real = audio.AudioEmbedder.embed_video
    def dies_on_third_video(self, path, times, gate=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, path, times, gate)
    cut = make_project(tmp_path / "cut", rows, weights, stores=1)
    monkeypatch.setattr(audio.AudioEmbedder, "embed_video", dies_on_third_video)
    with pytest.raises(KeyboardInterrupt):
        run_stage(cut, monkeypatch)
    assert FeatureReader(os.path.join(cut, OUT_DIR)).videos == ["a", "b"]
    monkeypatch.setattr(audio.AudioEmbedder, "embed_video", real)
    resumed = run_stage(cut, monkeypatch)
    assert resumed.videos == full.videos
    for vid in full.videos:
        for column in ("embedding", "valid", "frame", "time"):
            np.testing.assert_array_equal(resumed.rows(vid)[column], full.rows(vid)[column])
    assert tree_digest(os.path.join(cut, OUT_DIR)) == tree_digest(str(tmp_path / "full" / OUT_DIR))


def test_resume_with_nothing_to_do_reads_no_video(tmp_path, monkeypatch, videos, weights):
    """A finished stage run again opens no video (decode, probe or hash) and makes no weights: the
    videos' fingerprints come from the manifest, and only the weight file is hashed."""
    import av

    from avfusion import paths
    project = make_project(tmp_path, [("a", videos["voice"]), ("b", videos["pause"])], weights)
    before = tree_digest(str(run_stage(project, monkeypatch).directory))
    weights_before = tree_digest(os.path.join(project, "data", "weights"))
    hashed, real_sha256 = [], paths.file_sha256
    monkeypatch.setattr(paths, "file_sha256", lambda path: hashed.append(os.path.relpath(path, project)) or real_sha256(path))
    monkeypatch.setattr(av, "open", lambda *args, **kwargs: pytest.fail(f"opened a video: {args}"))
    monkeypatch.setattr(audio, "write_random_weights", lambda *a: pytest.fail("weights made again"))
    reader = run_stage(project, monkeypatch)
    assert set(hashed) == {os.path.join("data", "weights", "openl3", "openl3.h5")}
    assert tree_digest(reader.directory) == before
    assert tree_digest(os.path.join(project, "data", "weights")) == weights_before
