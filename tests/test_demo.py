"""The demo dataset: deterministic, real H.264 + AAC, labels in the Aff-Wild2 format, faces MTCNN finds."""
import glob
import os
import subprocess
import sys

import numpy as np
import pytest

from avfusion.sources.annotations import read_labels
from avfusion.sources.demo import make_video
from avfusion.sources.media import frame_times, probe, read_audio

from conftest import REPO

PARAMS = {"videos": 6, "seconds": 3, "fps": 10, "size": 160, "seed": 0}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    os.makedirs(out / "videos")
    os.makedirs(out / "labels")
    splits = [make_video(i, PARAMS, str(out)) for i in range(PARAMS["videos"])]
    return out, splits


def test_videos_are_real_h264_aac_with_one_label_per_frame(demo_dir):
    out, splits = demo_dir
    assert {s for _, s in splits} == {"train", "validation", "test"}
    for vid, _ in splits:
        path = str(out / "videos" / f"{vid}.mp4")
        info = probe(path)
        assert info.has_audio and info.width == 160 and info.fps == 10
        assert len(frame_times(path)) == len(read_labels(str(out / "labels" / f"{vid}.txt"))) == 30
        audio, _ = read_audio(path, 16000)
        assert abs(len(audio) - 3 * 16000) < 2048


def test_generation_is_deterministic(demo_dir, tmp_path):
    """Byte-identical in another process, in another order: x264's assembly made some videos'
    bytes depend on what the process had encoded before (the demo now encodes with asm=0)."""
    out, splits = demo_dir
    os.makedirs(tmp_path / "videos")
    os.makedirs(tmp_path / "labels")
    script = ("import sys; from avfusion.sources.demo import make_video\n"
              f"for i in reversed(range({PARAMS['videos']})): make_video(i, {PARAMS!r}, sys.argv[1])")
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, cwd=REPO)
    for vid, _ in splits:
        for sub in (f"videos/{vid}.mp4", f"labels/{vid}.txt"):
            assert (tmp_path / sub).read_bytes() == (out / sub).read_bytes(), sub


def test_labels_vary_and_have_gaps_and_silence(demo_dir):
    out, _ = demo_dir
    labels = [read_labels(p) for p in sorted(glob.glob(str(out / "labels" / "*.txt")))]
    valid = np.concatenate([rows[rows[:, 0] != -5] for rows in labels])
    assert valid.std(0).min() > 0.2 and np.abs(valid).max() <= 1
    assert any((rows == -5).any() for rows in labels)     # an annotator gap exists
    audio, _ = read_audio(str(out / "videos" / "demo-02.mp4"), 16000)   # index % 3 == 2: a silent stretch
    rms = np.sqrt(np.convolve(audio ** 2, np.ones(1600) / 1600, mode="valid"))
    assert rms.min() < 1e-3 < rms.max()


def test_mtcnn_finds_the_drawn_face(demo_dir):
    from facenet_pytorch import MTCNN

    from avfusion.sources.media import decode_video
    out, _ = demo_dir
    frames = np.stack([f.to_ndarray(format="rgb24") for _, f in decode_video(str(out / "videos" / "demo-00.mp4"))])
    boxes, _ = MTCNN(keep_all=True).detect(frames)
    assert sum(b is not None for b in boxes) >= 0.8 * len(frames)
