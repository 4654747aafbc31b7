"""Sharded extraction: 2 local processes and 2 torchrun ranks write stores identical to one process.

The extractor is trivial and deterministic but writes real stores through `StoreWriter`, as the
visual/audio stages do. This file is also the script torchrun launches (see `__main__`).
"""
import functools
import glob
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

from conftest import tree_digest
from avfusion.buckets import BucketError, Videos, plan, run_buckets
from avfusion.store import FeatureReader, StoreWriter, bucket_of, store_path

STORES = 4
ROWS = [{"video_id": f"video-{i:03d}", "frames": str(20 + 7 * i)} for i in range(24)]


def extract_fake(out_dir: str, bucket: int, videos: Videos) -> None:
    """Module-level (picklable into spawned workers); fails on purpose for ids starting with 'bad'."""
    writer = StoreWriter(store_path(out_dir, bucket), 8, {"extractor": "fake/1"}, videos.ids)
    for row in videos.todo(writer.committed):
        if row["video_id"].startswith("bad"):
            raise ValueError("cannot decode")
        n = int(row["frames"])
        rng = np.random.default_rng(zlib.crc32(row["video_id"].encode()))
        writer.append(row["video_id"], embedding=rng.normal(size=(n, 8)).astype(np.float32),
                      valid=rng.random(n) > 0.1, frame=np.arange(n), time=np.arange(n) / 25.0)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("single"))
    assert run_buckets(ROWS, STORES, functools.partial(extract_fake, out), workers=1) == [0, 1, 2, 3]
    return out


def test_plan_keeps_manifest_order_per_bucket():
    planned = plan(ROWS, STORES)
    assert len(planned) == STORES
    assert sorted(r["video_id"] for b in planned for r in b) == sorted(r["video_id"] for r in ROWS)
    for b, rows in enumerate(planned):
        assert all(bucket_of(r["video_id"], STORES) == b for r in rows)
        assert rows == [r for r in ROWS if r in rows]          # manifest order, which StoreWriter's plan needs


def test_trials_of_one_video_file_share_a_store():
    """Aff-Wild2 `_left`/`_right` trials land in one store (its process reads the shared file once),
    whatever bucket their own ids hash to; other rows are bucketed by their id."""
    pairs = [{"video_id": f"clip-{i}_{side}", "person": side} for i in range(12) for side in ("left", "right")]
    assert any(bucket_of(f"clip-{i}_left", STORES) != bucket_of(f"clip-{i}_right", STORES) for i in range(12))
    planned = plan(pairs + ROWS, STORES)
    for i in range(12):
        assert [r["video_id"] for r in planned[bucket_of(f"clip-{i}", STORES)] if r["video_id"].startswith(f"clip-{i}_")] \
            == [f"clip-{i}_left", f"clip-{i}_right"]
    assert all(bucket_of(r["video_id"], STORES) == b for b, rows in enumerate(planned) for r in rows if r in ROWS)


def test_single_process_writes_every_video(single):
    reader = FeatureReader(single)
    assert reader.videos == sorted(r["video_id"] for r in ROWS)
    assert len(glob.glob(os.path.join(single, "store-*.zarr"))) == STORES


def test_two_local_processes_match_single_process(tmp_path, single):
    out = str(tmp_path)
    assert sorted(run_buckets(ROWS, STORES, functools.partial(extract_fake, out), workers=2)) == [0, 1, 2, 3]
    assert tree_digest(out) == tree_digest(single)


def test_error_names_store_and_video(tmp_path):
    rows = ROWS[:6] + [{"video_id": "bad-clip", "frames": "10"}]
    with pytest.raises(BucketError) as info:
        run_buckets(rows, STORES, functools.partial(extract_fake, str(tmp_path)), workers=2)
    assert info.value.video == "bad-clip"
    assert info.value.bucket == bucket_of("bad-clip", STORES)
    assert "bad-clip" in str(info.value) and "cannot decode" in str(info.value)


def torchrun(out: str, *extra: str) -> subprocess.CompletedProcess:
    from conftest import REPO, tool_env
    env = {**tool_env(), "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.abspath(__file__), out, *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_two_ranks_match_single_process(tmp_path, single):
    out = str(tmp_path / "features")
    proc = torchrun(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # each rank wrote its own buckets (r, r + W, ...) and returned only after both were done
    assert "rank 0 of 2 wrote [0, 2], sees 24 videos" in proc.stdout
    assert "rank 1 of 2 wrote [1, 3], sees 24 videos" in proc.stdout
    assert tree_digest(out) == tree_digest(single)


def test_torchrun_failure_stops_every_rank(tmp_path):
    proc = torchrun(str(tmp_path / "features"), "bad")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "video bad-clip: ValueError: cannot decode" in output           # the failing rank
    assert "rank 1: 1 other rank(s) failed" in output                      # the other one did not hang


if __name__ == "__main__":      # launched by torchrun: python -m torch.distributed.run ... <out> [bad]
    out_dir = sys.argv[1]
    rows = ROWS + ([{"video_id": "bad-clip", "frames": "10"}] if "bad" in sys.argv[2:] else [])
    mine = run_buckets(rows, STORES, functools.partial(extract_fake, out_dir), workers=1)
    committed = len(FeatureReader(out_dir).videos)      # after the meeting point: all ranks' stores
    print(f"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']} wrote {mine}, sees {committed} videos",
          flush=True)
