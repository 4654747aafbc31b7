"""Issue 7: bad media and bad annotations fail with one clear line (or a recorded skip/repair), results
reproduce from a fresh clone, and nothing unsafe is loaded.

Everything runs on real encoded videos and real subprocesses; expensive work is shared (module
fixtures, the session's `extracted_pipeline`).
"""
import csv
import glob
import json
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from avfusion.sources import media

from conftest import REPO, dvc, encode_video, run, run_stage, tone, tree_digest, write_manifest

FPS, FRAMES = 10, 10


def encode(path, frames=FRAMES, audio_seconds=None, size=32):
    """A real H.264 (+ AAC with a 220 Hz tone) video; `audio_seconds` shorter than the video is allowed."""
    images = [Image.new("RGB", (size, size), (20 * i % 255, 80, 120)) for i in range(frames)]
    return encode_video(path, images, tone(frames / FPS if audio_seconds is None else audio_seconds), FPS)


def cut(src, dest, share=0.5):
    data = open(src, "rb").read()
    open(dest, "wb").write(data[:int(len(data) * share)])
    return str(dest)


@pytest.fixture(scope="module")
def bad_media(tmp_path_factory):
    """name -> (path, words the one-line error must contain). Each is made the way it happens for real."""
    d = tmp_path_factory.mktemp("bad_media")
    good_mp4, good_mkv = encode(d / "good.mp4", 20), encode(d / "good.mkv", 20)
    (d / "zero.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("these are my notes, not a video\n" * 20)
    # H.264 with its sample entry renamed: the container is fine, no decoder exists for the stream
    (d / "codec.mp4").write_bytes(open(good_mp4, "rb").read().replace(b"avc1", b"zzzz"))
    return {
        "zero-byte": (str(d / "zero.mp4"), "empty file"),
        "text": (str(d / "text.mp4"), "cannot be opened as a video"),
        "truncated-mp4": (cut(good_mp4, d / "half.mp4"), "truncated"),          # loses its moov index
        "truncated-mkv": (cut(good_mkv, d / "half.mkv"), "truncated video"),    # decodes silently short
        "codec": (str(d / "codec.mp4"), "unsupported video codec"),
    }


@pytest.mark.parametrize("case", ["zero-byte", "text", "truncated-mp4", "truncated-mkv", "codec"])
def test_bad_media_is_one_line_naming_the_file(bad_media, case):
    path, words = bad_media[case]
    with pytest.raises(media.MediaError) as err:
        media.frame_times(path)
    message = str(err.value)
    assert message.startswith(path + ":") and words in message and "\n" not in message


def test_one_frame_and_short_audio_are_valid_media(tmp_path):
    one = encode(tmp_path / "one.mp4", frames=1)
    assert len(media.frame_times(one)) == 1
    short = encode(tmp_path / "short.mp4", frames=FRAMES, audio_seconds=0.3)
    samples, start = media.read_audio(short, 16000)
    assert len(media.frame_times(short)) == FRAMES and 0.25 < len(samples) / 16000 < 0.45 and start == 0


# --- media that break after the dataset stage read them, in the extraction stages (real subprocesses) ---
# (The dataset stage decodes every video, so bad media normally stop there: test_dataset_unreadable_video.
# A file replaced or damaged afterwards is met by the extraction stages, which skip or stop on it.)

def stage_project(root, videos, on_error):
    """A project for `python -m stages.extract facenet|openl3`: params and a manifest with frame times;
    the bad files' times are those the dataset stage read from them before they broke."""
    with open(os.path.join(REPO, "params.yaml")) as f:
        params = yaml.safe_load(f)
    for section in ("facenet", "openl3"):
        params[section].update(stores=1, workers=1, device="cpu", on_error=on_error)
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    # media: the case name, as two of the bad files differ only in their extension
    write_manifest(root / "data" / "manifest.csv",
                   [{"video_id": vid, "path": path, "fps": FPS, "media": vid,
                     **({} if vid in ("one", "short", "after") else {"times": np.arange(20) / FPS})}
                    for vid, path in videos])


def last_line(stderr):
    """The last line a user sees (tqdm redraws its bars with carriage returns)."""
    return [line for line in re.split(r"[\r\n]", stderr) if line.strip()][-1]


def committed(store):
    import zarr
    group = zarr.open_group(store, mode="r")
    offsets = group.attrs["offsets"]
    # nothing half-written: every array ends exactly at the last commit
    assert all(group[name].shape[0] == offsets[-1] for name in group.array_keys())
    return dict(zip(group.attrs["videos"], np.diff(offsets).tolist())), group


@pytest.fixture(scope="module")
def extraction_media(tmp_path_factory, bad_media):
    d = tmp_path_factory.mktemp("extraction_media")
    good = [("one", encode(d / "one.mp4", frames=1)),
            ("short", encode(d / "short.mp4", frames=FRAMES, audio_seconds=0.35))]
    return good, [(case, bad_media[case][0]) for case in bad_media]


# what each extractor meets: openl3 reads only the audio, which a truncated mkv still holds
UNUSABLE = {"facenet": {"zero-byte", "text", "truncated-mp4", "truncated-mkv", "codec"},
            "openl3": {"zero-byte", "text", "truncated-mp4", "codec"}}


@pytest.mark.parametrize("stage", ["facenet", "openl3"])
def test_extraction_skip_records_bad_videos_and_keeps_good_rows(tmp_path, extraction_media, stage):
    good, bad = extraction_media
    bad = [(vid, path) for vid, path in bad if vid in UNUSABLE[stage]]
    stage_project(tmp_path, good + bad, "skip")
    proc = run_stage(f"extract {stage}", tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "reports" / f"skipped_{stage}.json").read_text())["skipped"]
    assert sorted(s["video_id"] for s in report) == sorted(vid for vid, _ in bad)
    assert all(s["problem"].startswith(s["path"] + ":") for s in report)
    rows, group = committed(tmp_path / "data" / "features" / stage / "store-00.zarr")
    assert rows == {"one": 1, "short": FRAMES, **{vid: 0 for vid, _ in bad}}   # skipped: committed, no rows
    if stage == "openl3":
        valid = group["valid"][1:1 + FRAMES]
        # frames past the end of the audio (0.35 s) have no sound: invalid; the tone before is valid
        assert valid[:3].all() and not valid[5:].any()
        again = run_stage(f"extract {stage}", tmp_path)      # a finished store resumes to the same report
        assert again.returncode == 0
        assert json.loads((tmp_path / "reports" / "skipped_openl3.json").read_text())["skipped"] == report


@pytest.mark.parametrize("stage,case", [("facenet", "truncated-mkv"), ("openl3", "codec")])
def test_extraction_fail_stops_with_one_line_and_no_half_written_video(tmp_path, extraction_media, stage, case):
    good, bad = extraction_media
    bad_path = dict(bad)[case]
    stage_project(tmp_path, good + [(case, bad_path), ("after", good[0][1])], "fail")
    proc = run_stage(f"extract {stage}", tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    line = last_line(proc.stderr)
    assert line.startswith(f"{stage}: store 0, video {case}: {bad_path}:"), line
    rows, _ = committed(tmp_path / "data" / "features" / stage / "store-00.zarr")
    assert rows == {"one": 1, "short": FRAMES}                 # the videos before it, nothing after


def test_unknown_on_error_value_is_one_line(tmp_path, extraction_media):
    stage_project(tmp_path, extraction_media[0], "ignore")
    proc = run_stage("extract openl3", tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "openl3: params.yaml: openl3.on_error must be one of fail, skip, not 'ignore'"


# --- bad annotations through the dataset stage (Aff-Wild2 layout), as real subprocesses -----------

@pytest.fixture(scope="module")
def affwild2_media(tmp_path_factory):
    d = tmp_path_factory.mktemp("aw_media")
    return {"10-30-640x360": encode(d / "10-30-640x360.mp4", 20), "7": encode(d / "7.mp4", 20)}


def affwild2_project(root, media_files, labels, on_error="fail"):
    """root/params.yaml + root/aw/{videos,annotations}; labels: trial -> file text."""
    (root / "aw" / "videos").mkdir(parents=True)
    for path in media_files.values():
        os.symlink(path, root / "aw" / "videos" / os.path.basename(path))
    ann = root / "aw" / "annotations" / "VA_Estimation_Challenge"
    for split in ("Train_Set", "Validation_Set"):
        (ann / split).mkdir(parents=True)
    for trial, text in labels.items():
        (ann / ("Validation_Set" if trial == "7" else "Train_Set") / f"{trial}.txt").write_text(text)
    params = {"data": {"source": "affwild2", "root": "aw", "validation": 0.2, "test": 0.2, "on_error": on_error}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def label_text(rows):
    return "valence,arousal\n" + "".join(f"{v},{a}\n" for v, a in rows)


def test_dataset_records_small_label_frame_differences(tmp_path, affwild2_media):
    affwild2_project(tmp_path, affwild2_media, {"10-30-640x360": label_text([[0.1, 0.2]] * 21),    # one extra
                                                "7": label_text([[0.1, -5]] * 18)})               # two missing
    proc = run_stage("dataset", tmp_path)
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "data" / "manifest.csv") as f:
        rows = {r["video_id"]: r for r in csv.DictReader(f)}
    assert (rows["10-30-640x360"]["frames"], rows["10-30-640x360"]["label_frames"]) == ("20", "21")
    assert (rows["7"]["frames"], rows["7"]["label_frames"]) == ("20", "18")
    report = json.loads((tmp_path / "reports" / "dataset.json").read_text())
    assert {r["video_id"]: r["label_rows"] - r["frames"] for r in report["label_rows_differ"]} == \
        {"10-30-640x360": 1, "7": -2}
    assert "10-30-640x360: 21 label rows, 20 frames (labels trusted)" in proc.stdout


GOOD = label_text([[0.1, 0.2]] * 20)


@pytest.mark.parametrize("labels, message", [
    ({"7": "arousal,valence\n" + "0,0\n" * 20}, r"7\.txt:1: header must be 'valence,arousal'"),
    ({"7": label_text([[0.1, 0.2]] * 5 + [["x", 0.2]] + [[0, 0]] * 14)}, r"7\.txt:7: expected two numbers"),
    ({"7": label_text([[0.1, 0.2]] * 9 + [[0.1, -2]] + [[0, 0]] * 10)}, r"7\.txt:11: value -2\.0 outside \[-1, 1\]"),
    ({"7": label_text([[0.1, 0.2]] * 40)}, r"7\.txt: 40 label rows but .*7\.mp4 has 20 frames"),
    ({"7": GOOD, "a..b": GOOD}, r"unsafe video id 'a\.\.b'"),   # (a file name cannot hold '/')
])
def test_dataset_bad_annotations_stop_with_one_line(tmp_path, affwild2_media, labels, message):
    affwild2_project(tmp_path, affwild2_media, {"10-30-640x360": GOOD, **labels})
    proc = run_stage("dataset", tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dataset: ") and re.search(message, lines[0]), proc.stderr
    assert not (tmp_path / "data" / "manifest.csv").exists()


def test_dataset_refuses_ids_that_escape_the_root(tmp_path, affwild2_media):
    """The demo layout names videos in splits.csv: a path there must not reach outside the root."""
    root = tmp_path / "demo"
    (root / "videos").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "splits.csv").write_text("video_id,split\n../../etc/passwd,train\n")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"source": "demo", "root": "demo"}}))
    proc = run_stage("dataset", tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("dataset: splits.csv: unsafe video id '../../etc/passwd' "
                                   "(letters, digits, '_', '-', '.' only; no '..' or '/')")


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_dataset_unreadable_video(tmp_path, affwild2_media, bad_media, on_error):
    affwild2_project(tmp_path, {**affwild2_media, "broken": bad_media["zero-byte"][0]},
                     {"10-30-640x360": GOOD, "7": GOOD, "zero": label_text([[0, 0]] * 3)}, on_error)
    proc = run_stage("dataset", tmp_path)
    if on_error == "fail":
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        line = proc.stderr.strip()
        assert "\n" not in line and line.startswith("dataset: ") and line.endswith("zero.mp4: empty file (0 bytes)")
        return
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "data" / "manifest.csv") as f:
        assert sorted(r["video_id"] for r in csv.DictReader(f)) == ["10-30-640x360", "7"]
    report = json.loads((tmp_path / "reports" / "dataset.json").read_text())
    assert [(s["video_id"], s["problem"].endswith("empty file (0 bytes)")) for s in report["skipped"]] == [("zero", True)]


# --- reproducibility from two fresh clones ---------------------------------------------------------

def committed_file(repo, path):
    """`path` as the fixture committed it (other tests may run experiments in that workspace)."""
    commit = run(["git", "log", "--format=%H", "--grep", "^extracted features$"], cwd=repo).stdout.split()[-1]
    return run(["git", "show", f"{commit}:{path}"], cwd=repo).stdout


@pytest.mark.slow
def test_two_fresh_clones_give_identical_stores_and_metrics(extracted_pipeline, tmp_path):
    # A git clone of the fixture at its first commit: the same code and params, no data, no DVC cache
    # (cloning, not copying the working tree, which may change under a running session)
    other = str(tmp_path / "b")
    run(["git", "clone", "-q", extracted_pipeline, other], cwd=str(tmp_path))
    first = run(["git", "rev-list", "--max-parents=0", "HEAD"], cwd=other).stdout.split()[0]
    run(["git", "checkout", "-q", first], cwd=other)
    assert not os.path.exists(os.path.join(other, "dvc.lock"))
    dvc("repro", cwd=other)
    for name in ("facenet", "openl3", "vad"):
        a = tree_digest(os.path.join(extracted_pipeline, "data", "features", name))
        b = tree_digest(os.path.join(other, "data", "features", name))
        assert a and a == b, name
    with open(os.path.join(other, "reports", "metrics.json")) as f:
        assert json.load(f) == json.loads(committed_file(extracted_pipeline, "reports/metrics.json"))
    lock_a = yaml.safe_load(committed_file(extracted_pipeline, "dvc.lock"))["stages"]
    with open(os.path.join(other, "dvc.lock")) as f:
        lock_b = yaml.safe_load(f)["stages"]
    for stage in ("dataset", "facenet", "openl3", "extract@vad", "train"):   # models too: CPU runs are bit-identical
        outs = [[o for o in lock[stage]["outs"] if not o["path"].startswith("reports/train")]   # has timings
                for lock in (lock_a, lock_b)]
        assert outs[0] == outs[1], stage


# --- safety ------------------------------------------------------------------------------------------

def test_code_loads_only_safely():
    """Every torch.load passes weights_only=True; YAML only through safe_load; no pickle anywhere."""
    for path in glob.glob(os.path.join(REPO, "avfusion", "**", "*.py"), recursive=True) + \
            glob.glob(os.path.join(REPO, "stages", "*.py")):
        text = open(path).read()
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path}: {call}"
        assert not re.search(r"yaml\.(load|unsafe_load|full_load)\(", text), path
        assert not re.search(r"pickle\.loads?\(|import dill|import joblib", text), path


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_malicious_checkpoint_is_refused_by_evaluate_and_predict(extracted_pipeline, tmp_path):
    marker = tmp_path / "pwned"
    Exploit.marker = str(marker)
    fold = os.path.join(extracted_pipeline, "models", "fold-0")
    models = tmp_path / "project" / "models" / "fold-0"
    models.mkdir(parents=True)
    (models / "config.json").write_text(open(os.path.join(fold, "config.json")).read())
    with open(models / "model.pt", "wb") as f:
        pickle.dump({"W_ja": Exploit()}, f)
    from avfusion.learning.train import CheckpointError, load_model
    with pytest.raises(CheckpointError, match="refused to load: not a plain tensor checkpoint"):
        load_model(str(models))
    # the command-line loader: one line naming the file, the code never runs
    video = encode(tmp_path / "clip.mp4")
    proc = subprocess.run([sys.executable, "-m", "avfusion.app.cli", "predict", video, "--out", str(tmp_path / "p.csv"),
                           "--model", str(models.parent), "--device", "cpu"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = last_line(proc.stderr)
    assert str(models / "model.pt") in line and "refused to load" in line
    assert not marker.exists()


ALLOWED_CODECS = {"sharding_indexed", "bytes", "zstd", "crc32c", "transpose", "blosc", "gzip"}


@pytest.mark.slow
def test_real_store_holds_only_plain_numbers(extracted_pipeline):
    metas = glob.glob(os.path.join(extracted_pipeline, "data", "features", "*", "store-*.zarr", "**", "zarr.json"),
                      recursive=True)
    arrays = 0
    for path in metas:
        meta = json.load(open(path))
        if meta["node_type"] != "array":
            continue
        arrays += 1
        assert meta["data_type"] in {"bool", "int32", "int64", "float32", "float64"}, path

        def codecs(chain):
            for codec in chain:
                yield codec["name"]
                yield from codecs(codec.get("configuration", {}).get("codecs", []))
                yield from codecs(codec.get("configuration", {}).get("index_codecs", []))
        assert set(codecs(meta["codecs"])) <= ALLOWED_CODECS, path
    assert arrays >= 2 * 5
