"""The extraction runner's sharding: 2 local processes and 2 torchrun ranks write stores identical to one
process; trials of one media file share a store (and, for per-file extractors, one extraction); a
resume with nothing left to do extracts nothing.

The extractor is trivial and deterministic but writes real stores through the runner, as the
visual/audio stages do. This file is also the script torchrun launches (see `__main__`).
"""
import glob
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

from avfusion.extraction.base import Extractor
from avfusion.extraction.runner import ExtractionCrash, plan, run_extraction
from avfusion.paths import ROOT_ENV
from avfusion.sources.manifest import write_frame_times
from avfusion.store.layout import bucket_of
from avfusion.store.reader import FeatureReader

from conftest import tree_digest

STORES = 4
PARAMS = {"stores": STORES, "workers": 1, "device": "cpu"}


def manifest_row(video_id: str, frames: int, media: str | None = None, person: str = "") -> dict:
    media = media or video_id
    return {"video_id": video_id, "path": f"videos/{media}.mp4", "media": media, "person": person,
            "frames": str(frames), "sha256": f"{zlib.crc32(media.encode()):064x}"}


ROWS = [manifest_row(f"video-{i:03d}", 20 + 7 * i) for i in range(24)]
OTHERS = ([manifest_row(f"clip-{i}_{side}", 12, f"clip-{i}", side) for i in range(3) for side in ("left", "right")]
          + [manifest_row("solo", 9), manifest_row("bad-clip", 10), dict(manifest_row("video-005", 20 + 7 * 5), sha256="f" * 64)])


def write_times(root: str) -> None:
    """The frame times the dataset stage would have written for every fake row (the runner reads them)."""
    for row in ROWS + OTHERS:
        write_frame_times(row["sha256"], np.arange(int(row["frames"])) / 25.0, os.path.join(root, "data", "frame_times"))


@pytest.fixture(scope="module", autouse=True)
def project(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("project"))
    write_times(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ROOT_ENV, root)      # spawned workers and torchrun ranks inherit it
        yield root


class FakeExtractor(Extractor):
    """Module-level (spawned workers import it by name); fails on purpose for ids starting with 'bad'."""
    name = "fake"
    version = "fake/1"
    calls: list[str] = []          # videos extracted in this process (per_file sharing, resume)

    def __init__(self, params, device):
        super().__init__(params, device)
        self.dim = 8

    def rows(self, video):
        FakeExtractor.calls.append(video.id)
        if video.id.startswith("bad"):
            raise ValueError("cannot decode")
        n = len(video.times)
        rng = np.random.default_rng(zlib.crc32(video.media.encode()))
        return {"embedding": rng.normal(size=(n, 8)).astype(np.float32), "valid": rng.random(n) > 0.1,
                "time": video.times}


class PerFileFake(FakeExtractor):
    per_file = True


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("single"))
    assert run_extraction(FakeExtractor, PARAMS, ROWS, out) == [0, 1, 2, 3]
    return out


def test_plan_keeps_manifest_order_per_bucket():
    planned = plan(ROWS, STORES)
    assert len(planned) == STORES
    assert sorted(r["video_id"] for b in planned for r in b) == sorted(r["video_id"] for r in ROWS)
    for b, rows in enumerate(planned):
        assert all(bucket_of(r["video_id"], STORES) == b for r in rows)
        assert rows == [r for r in ROWS if r in rows]          # manifest order, which StoreWriter's plan needs


def test_trials_of_one_media_file_share_a_store():
    """Aff-Wild2 `_left`/`_right` trials land in one store (its process reads the shared file once),
    whatever bucket their own ids hash to; rows are bucketed by their media file."""
    pairs = [manifest_row(f"clip-{i}_{side}", 10, f"clip-{i}", side) for i in range(12) for side in ("left", "right")]
    assert any(bucket_of(f"clip-{i}_left", STORES) != bucket_of(f"clip-{i}_right", STORES) for i in range(12))
    planned = plan(pairs + ROWS, STORES)
    for i in range(12):
        assert [r["video_id"] for r in planned[bucket_of(f"clip-{i}", STORES)] if r["video_id"].startswith(f"clip-{i}_")] \
            == [f"clip-{i}_left", f"clip-{i}_right"]
    assert all(bucket_of(r["video_id"], STORES) == b for b, rows in enumerate(planned) for r in rows if r in ROWS)


def test_per_file_extractor_extracts_a_shared_file_once(tmp_path):
    rows = OTHERS[:7]
    FakeExtractor.calls = []
    run_extraction(PerFileFake, PARAMS, rows, str(tmp_path / "shared"))
    assert sorted(FakeExtractor.calls) == ["clip-0_left", "clip-1_left", "clip-2_left", "solo"]
    FakeExtractor.calls = []
    run_extraction(FakeExtractor, PARAMS, rows, str(tmp_path / "each"))   # per person: every trial
    assert sorted(FakeExtractor.calls) == sorted(r["video_id"] for r in rows)
    shared, each = FeatureReader(str(tmp_path / "shared")), FeatureReader(str(tmp_path / "each"))
    for row in rows:                       # the same rows either way (the fake depends on the file only)
        np.testing.assert_array_equal(shared.rows(row["video_id"])["embedding"], each.rows(row["video_id"])["embedding"])


def test_resume_with_nothing_to_do_extracts_and_loads_nothing(tmp_path, monkeypatch):
    out = str(tmp_path)
    run_extraction(FakeExtractor, PARAMS, ROWS, out)
    before = tree_digest(out)
    FakeExtractor.calls = []
    monkeypatch.setattr(FakeExtractor, "load", lambda self: pytest.fail("models loaded with nothing to do"))
    run_extraction(FakeExtractor, PARAMS, ROWS, out)
    assert FakeExtractor.calls == [] and tree_digest(out) == before
    # a changed video (its manifest SHA-256) rebuilds its store instead of resuming it
    changed = [dict(r, sha256="f" * 64) if r["video_id"] == "video-005" else r for r in ROWS]
    monkeypatch.undo()
    run_extraction(FakeExtractor, PARAMS, changed, out)
    assert sorted(FakeExtractor.calls) == sorted(r["video_id"] for r in ROWS
                                                 if bucket_of(r["media"], STORES) == bucket_of("video-005", STORES))


def test_single_process_writes_every_video(single):
    reader = FeatureReader(single)
    assert reader.videos == sorted(r["video_id"] for r in ROWS)
    assert len(glob.glob(os.path.join(single, "store-*.zarr"))) == STORES


def test_two_local_processes_match_single_process(tmp_path, single):
    out = str(tmp_path)
    assert sorted(run_extraction(FakeExtractor, {**PARAMS, "workers": 2}, ROWS, out)) == [0, 1, 2, 3]
    assert tree_digest(out) == tree_digest(single)


def test_error_names_store_and_video(tmp_path):
    rows = ROWS[:6] + [manifest_row("bad-clip", 10)]
    with pytest.raises(ExtractionCrash) as info:      # a ValueError is a bug: it keeps its traceback
        run_extraction(FakeExtractor, {**PARAMS, "workers": 2}, rows, str(tmp_path))
    assert info.value.video == "bad-clip"
    assert info.value.bucket == bucket_of("bad-clip", STORES)
    assert "bad-clip" in str(info.value) and "cannot decode" in str(info.value)
    assert "Traceback" in str(info.value)


def torchrun(out: str, *extra: str) -> subprocess.CompletedProcess:
    from conftest import REPO, tool_env
    env = {**tool_env(), "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.abspath(__file__), out, *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_torchrun_two_ranks_match_single_process(tmp_path, single):
    out = str(tmp_path / "features")
    proc = torchrun(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # each rank wrote its own buckets (r, r + W, ...) and returned only after both were done
    assert "rank 0 of 2 wrote [0, 2], sees 24 videos" in proc.stdout
    assert "rank 1 of 2 wrote [1, 3], sees 24 videos" in proc.stdout
    assert tree_digest(out) == tree_digest(single)


@pytest.mark.slow
def test_torchrun_failure_stops_every_rank(tmp_path):
    proc = torchrun(str(tmp_path / "features"), "bad")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "video bad-clip: ValueError: cannot decode" in output           # the failing rank
    assert "rank 1: 1 other rank(s) failed" in output                      # the other one did not hang


if __name__ == "__main__":      # launched by torchrun: python -m torch.distributed.run ... <out> [bad]
    out_dir = sys.argv[1]
    rows = ROWS + ([manifest_row("bad-clip", 10)] if "bad" in sys.argv[2:] else [])
    mine = run_extraction(FakeExtractor, PARAMS, rows, out_dir)
    committed = len(FeatureReader(out_dir).videos)      # after the meeting point: all ranks' stores
    print(f"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']} wrote {mine}, sees {committed} videos",
          flush=True)
