"""The data path: alignment on the annotation length, windows, masks and prediction."""
import csv
import os

import numpy as np
import pytest
import torch

from avfusion.learning.metrics import INVALID
from avfusion.learning.windows import load_split, predict_video, repeatable_cpu_math, window_starts
from avfusion.sources.annotations import write_labels
from avfusion.sources.manifest import read_manifest
from avfusion.store.layout import bucket_of, store_path
from avfusion.store.writer import StoreWriter

DIM_VISUAL, DIM_AUDIO = 12, 8


def make_dataset(root, lengths=(90, 70, 120, 60, 80, 100, 75, 65), seed=0, stores=2):
    """Tiny real stores + label files + manifest under root/data, with learnable labels.

    Valence is written mostly into the visual features, arousal into both; some frames have no face,
    one video has a silent stretch, and label files are one frame longer or shorter than the features.
    Splits: the first half train, then validation, then test (two videos each at least).
    """
    rng = np.random.default_rng(seed)
    data = os.path.join(root, "data")
    os.makedirs(os.path.join(data, "labels"), exist_ok=True)
    videos = {}
    rows = []
    splits = ["train"] * (len(lengths) - 4) + ["validation"] * 2 + ["test"] * 2
    visual_basis, audio_basis = rng.standard_normal((2, DIM_VISUAL)), rng.standard_normal((2, DIM_AUDIO))
    for i, (n, split) in enumerate(zip(lengths, splits)):
        vid = f"v{i:02d}"
        t = np.arange(n) / 15
        labels = np.stack([0.7 * np.sin(t * (0.5 + 0.1 * i) + i), 0.6 * np.cos(t * (0.4 + 0.05 * i))], 1)
        visual = labels @ np.array([[1.0], [0.5]]) * visual_basis[0] + 0.3 * labels[:, 1:] * visual_basis[1]
        visual = (visual + 0.2 * rng.standard_normal(visual.shape)).astype(np.float32)
        audio = (labels[:, 1:] * audio_basis[0] + 0.2 * rng.standard_normal((n, DIM_AUDIO))).astype(np.float32)
        face = np.ones(n, bool)
        face[n // 3:n // 3 + 5] = False
        voice = np.ones(n, bool)
        if i % 3 == 2:
            voice[n // 2:n // 2 + 10] = False
        visual[~face], audio[~voice] = 0, 0
        labels = labels.astype(np.float32)
        labels[5:8] = INVALID
        # annotation length differs from the feature length by one frame, both ways
        label_rows = n + 1 if i % 2 else n - 1
        full = np.concatenate([labels, labels[-1:]]) if i % 2 else labels[:-1]
        path = os.path.join(data, "labels", f"{vid}.txt")
        write_labels(path, full[:label_rows])
        videos[vid] = (visual, face, audio, voice)
        rows.append({"video_id": vid, "path": f"videos/{vid}.mp4", "split": split, "fps": 15, "frames": n,
                     "labels": path, "label_frames": label_rows, "person": f"p{i}", "media": vid,
                     "sha256": f"{i:064x}"})
    with open(os.path.join(data, "manifest.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for name, (col, valid_col, dim) in {"facenet": (0, 1, DIM_VISUAL), "openl3": (2, 3, DIM_AUDIO)}.items():
        directory = os.path.join(data, "features", name)
        os.makedirs(directory, exist_ok=True)
        for bucket in range(stores):
            plan = sorted(v for v in videos if bucket_of(v, stores) == bucket)
            writer = StoreWriter(store_path(directory, bucket), dim, {"extractor": f"synthetic-{name}"}, plan)
            for vid in plan:
                n = len(videos[vid][col])
                writer.append(vid, embedding=videos[vid][col], valid=videos[vid][valid_col],
                              frame=np.arange(n), time=np.arange(n) / 15)
    return data


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("windows")
    data = make_dataset(str(root))
    return data, read_manifest(os.path.join(data, "manifest.csv"))


def split_of(data, manifest, name="train"):
    entries = [e for e in manifest if e["split"] == name]
    return load_split(entries, os.path.join(data, "features/facenet"), os.path.join(data, "features/openl3"))


@pytest.mark.parametrize("n, window, hop", [(1, 8, 4), (8, 8, 4), (9, 8, 4), (30, 8, 3), (100, 64, 32)])
def test_window_starts_cover_every_frame(n, window, hop):
    starts = window_starts(n, window, hop)
    covered = np.zeros(n, bool)
    for s in starts:
        covered[s:s + window] = True
    assert covered.all() and starts[0] == 0
    assert all(b - a == hop for a, b in zip(starts, starts[1:]))
    assert starts[-1] < n and (len(starts) == 1 or starts[-2] + window < n)


def test_split_aligns_on_annotation_length(dataset):
    data, manifest = dataset
    split = split_of(data, manifest)
    entries = [e for e in manifest if e["split"] == "train"]
    assert [int(np.diff(split.offsets)[i]) for i in range(len(entries))] == [int(e["label_frames"]) for e in entries]
    odd = split.video_slices()["v01"]             # one label row more than feature rows
    assert not split.visual_valid[odd][-1] and not split.audio_valid[odd][-1]
    assert float(split.visual[odd][-1].abs().sum()) == 0


def test_gather_masks_padding_invalid_labels_and_absent_frames(dataset):
    data, manifest = dataset
    split = split_of(data, manifest)
    window = 64
    windows = split.windows(window, 32)
    x = split.gather(windows, window)
    assert x["visual"].shape == (len(windows), window, DIM_VISUAL) and x["labels"].shape == (len(windows), window, 2)
    lengths = (windows[:, 1] - windows[:, 0]).clamp(max=window)
    assert torch.equal(x["inside"].sum(1), lengths)
    assert not x["label_mask"][~x["inside"]].any() and not x["visual_valid"][~x["inside"]].any()
    assert not x["label_mask"][x["labels"] == INVALID].any()
    absent = ~(x["visual_valid"] | x["audio_valid"])
    assert not x["label_mask"][absent].any()


class FrameIndex(torch.nn.Module):
    """Predicts each frame's own first visual feature: averaging overlaps must return it unchanged."""

    def forward(self, visual, visual_valid, audio, audio_valid):
        return visual[..., :2]


@pytest.mark.parametrize("n", [5, 64, 100, 131])
def test_predict_video_covers_every_frame_and_averages_overlaps(n):
    visual = np.stack([np.linspace(-1, 1, n), np.linspace(1, -1, n)], 1).astype(np.float32)
    pred = predict_video(FrameIndex(), visual, np.ones(n, bool), np.zeros((n, 3), np.float32),
                         np.ones(n, bool), window=32, hop=8)
    assert pred.shape == (n, 2)
    np.testing.assert_allclose(pred, visual, atol=1e-6)


def test_repeatable_cpu_math_uses_one_thread_on_the_cpu_only_inside_the_block():
    before = torch.get_num_threads()
    with repeatable_cpu_math("cpu"):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), repeatable_cpu_math("cpu"):
        raise RuntimeError("a failed epoch still gives the threads back")
    assert torch.get_num_threads() == before
    with repeatable_cpu_math("cuda:0"):   # no CUDA needed: only the device name is read
        assert torch.get_num_threads() == before
    with repeatable_cpu_math("cpu", 0):   # train.threads: 0, torch's own setting (all cores)
        assert torch.get_num_threads() == before
    with repeatable_cpu_math("cpu", 3):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
