"""Annotations and the three data sources behind one manifest, on real encoded videos."""
import os

import numpy as np
import pytest
from PIL import Image

from avfusion.errors import DatasetError, ParamsError
from avfusion.params import validate
from avfusion.paths import file_sha256
from avfusion.sources.annotations import AnnotationError, check_video_id, inside, read_labels, write_labels
from avfusion.sources.dataset import build_manifest

from conftest import encode_video


@pytest.fixture(autouse=True)
def own_project_root(tmp_path, monkeypatch):
    """build_manifest writes each file's frame times under the project root and removes the others
    there: these tests' root is their temporary directory, never the checkout's data/."""
    monkeypatch.setenv("AVFUSION_ROOT", str(tmp_path))


def tiny_video(path, frames=6, size=32, audio=True):
    images = [Image.new("RGB", (size, size), (10 * i, 80, 120)) for i in range(frames)]
    encode_video(path, images, np.zeros(16000 * frames // 10, np.float32) if audio else None, fps=10)


def labels_file(path, rows):
    write_labels(str(path), np.asarray(rows, np.float32))


def test_read_labels_keeps_minus_five(tmp_path):
    labels_file(tmp_path / "a.txt", [[0.5, -0.25], [-5, -5], [1, -1]])
    np.testing.assert_array_equal(read_labels(str(tmp_path / "a.txt")), [[0.5, -0.25], [-5, -5], [1, -1]])


@pytest.mark.parametrize("text, message", [
    ("arousal,valence\n0,0\n", "header"),
    ("valence,arousal\n0.1,abc\n", ":2: expected two numbers"),
    ("valence,arousal\n0.1\n", "expected two numbers"),
    ("valence,arousal\n0.1,0.2\n1.5,0\n", ":3: value 1.5 outside"),
    ("valence,arousal\n0.1,nan\n", "expected two numbers"),
    ("valence,arousal\n0.1,0.2\n\n0.3,0.1\n", ":3: expected two numbers"),
    ("", "empty"),
])
def test_bad_annotations_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=message) as err:
        read_labels(str(path))
    assert str(path) in str(err.value)


@pytest.mark.parametrize("bad", ["../etc", "a/b", "..", "/abs", "", "x\\y", ".hidden"])
def test_unsafe_video_ids_are_refused(bad):
    with pytest.raises(AnnotationError, match="unsafe video id"):
        check_video_id(bad)


def test_symlink_out_of_root_is_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    os.symlink("/etc", root / "escape")
    with pytest.raises(AnnotationError, match="outside the data root"):
        inside(str(root), "escape", "passwd")


def test_affwild2_left_right_share_video_and_mismatch_is_recorded(tmp_path):
    root = tmp_path / "aw"
    (root / "videos" / "batch1").mkdir(parents=True)
    for split in ("Train_Set", "Validation_Set"):
        (root / "annotations" / "VA_Estimation_Challenge" / split).mkdir(parents=True)
    tiny_video(root / "videos" / "batch1" / "10-60-1280x720.mp4", frames=6)
    tiny_video(root / "videos" / "batch1" / "7.mp4", frames=5)
    ann = root / "annotations" / "VA_Estimation_Challenge"
    labels_file(ann / "Train_Set" / "10-60-1280x720_left.txt", [[0.1, 0.2]] * 6)
    labels_file(ann / "Train_Set" / "10-60-1280x720_right.txt", [[0.1, 0.2]] * 6)
    labels_file(ann / "Validation_Set" / "7.txt", [[0.1, 0.2]] * 4 + [[-5, -5]] * 3)   # 7 rows, 5 frames
    rows = {r["video_id"]: r for r in build_manifest({"source": "affwild2", "root": str(root)})}
    assert set(rows) == {"10-60-1280x720_left", "10-60-1280x720_right", "7"}
    assert rows["10-60-1280x720_left"]["path"] == rows["10-60-1280x720_right"]["path"]
    assert (rows["10-60-1280x720_left"]["person"], rows["10-60-1280x720_right"]["person"]) == ("left", "right")
    # one media key and one fingerprint per file, shared by its trials
    left, right, seven = rows["10-60-1280x720_left"], rows["10-60-1280x720_right"], rows["7"]
    assert left["media"] == right["media"] == "10-60-1280x720" and seven["media"] == "7"
    assert left["sha256"] == right["sha256"] == file_sha256(left["path"]) != seven["sha256"]
    assert rows["7"]["split"] == "validation" and rows["7"]["frames"] == 5 and rows["7"]["label_frames"] == 7


def test_affwild2_missing_video_is_an_error(tmp_path):
    ann = tmp_path / "annotations" / "VA_Estimation_Challenge" / "Train_Set"
    ann.mkdir(parents=True)
    (tmp_path / "videos").mkdir()
    labels_file(ann / "42.txt", [[0, 0]])
    with pytest.raises(DatasetError, match="no video named 42"):
        build_manifest({"source": "affwild2", "root": str(tmp_path)})


def test_folder_source_splits_stably(tmp_path):
    for i in range(12):
        tiny_video(tmp_path / f"clip{i}.mkv" if i % 2 else tmp_path / f"clip{i}.mp4", frames=3, audio=False)
        labels_file(tmp_path / f"clip{i}.csv", [[0, 0]] * 3)
    params = {"source": "folder", "root": str(tmp_path), "validation": 0.25, "test": 0.25}
    first = build_manifest(params)
    assert len(first) == 12 and {r["split"] for r in first} <= {"train", "validation", "test"}
    (tmp_path / "clip99.mp4").write_bytes((tmp_path / "clip0.mp4").read_bytes())
    labels_file(tmp_path / "clip99.csv", [[0, 0]] * 3)
    second = {r["video_id"]: r["split"] for r in build_manifest(params)}
    assert all(second[r["video_id"]] == r["split"] for r in first)   # adding a video moves no other


def test_folder_source_needs_labels(tmp_path):
    tiny_video(tmp_path / "a.mp4", frames=2)
    with pytest.raises(AnnotationError, match="no label file"):
        build_manifest({"source": "folder", "root": str(tmp_path), "validation": 0.2, "test": 0.2})


def test_unknown_source_is_refused_by_the_params_schema():
    with pytest.raises(ParamsError, match=r"^params.yaml: data.source must be one of demo, affwild2, folder, "
                                          r"not 'nope'$"):
        validate("data", {"source": "nope", "root": "data"})


def test_missing_data_root_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="nowhere: data root not found"):
        build_manifest({"source": "demo", "root": str(tmp_path / "nowhere")})
