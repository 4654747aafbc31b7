"""Sharded extraction: every feature store (bucket of videos) is written by exactly one process.

Parallel writes into one Zarr shard lose data silently (docs/design.md §5), so the unit of parallelism is
the store, never the video. The plan of a store is its videos in manifest order (`bucket_of`), the
same whether one process writes all stores or many processes / machines each write a few, so the
stores come out byte-identical either way.

    run_buckets(rows, stores, extract_store, workers=2)

- one process, `workers` <= 1: buckets run in this process, in order;
- `workers` > 1: buckets run in a pool of spawned processes (CUDA and Zarr do not survive fork);
- under `torchrun` (`WORLD_SIZE` > 1): rank r takes buckets r, r+W, r+2W, ... (with its own pool if
  `workers` > 1), then all ranks meet in a gloo all-reduce, so every rank returns only when all stores
  are done (or raises when any rank failed). Ranks on several machines must share the data directory.

`extract_store(bucket, videos)` must be a module-level function (it is pickled into the workers). It
should iterate `videos` (or `videos.todo(done)`) directly: the runner then names the video being
extracted when an error escapes.
"""
from __future__ import annotations

import glob
import json
import multiprocessing as mp
import os
import shutil
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import timedelta

import numpy as np
import zarr

from avfusion.dataset import read_manifest
from avfusion.errors import UserError
from avfusion.media import MediaError
from avfusion.params import on_error
from avfusion.store import StoreWriter, bucket_of, file_sha256, store_path

WORKER_ENV = "AVFUSION_WORKER"     # the slot (0..workers-1) of a pool process, for picking a GPU


class BucketError(RuntimeError):
    """Extraction of one store failed; names the store, the video (when known) and the cause."""

    def __init__(self, bucket: int, video: str | None, detail: str):
        super().__init__(bucket, video, detail)     # all in args, so it pickles across processes
        self.bucket, self.video, self.detail = bucket, video, detail

    def __str__(self) -> str:
        where = f"store {self.bucket}" + (f", video {self.video}" if self.video else "")
        return f"{where}: {self.detail}"


class Videos(Sequence):
    """The manifest rows of one store, in plan order; iterating records the video being extracted."""

    def __init__(self, rows: list[dict], key: str = "video_id"):
        self.rows, self.key, self.current = rows, key, None

    @property
    def ids(self) -> list[str]:
        """The store's plan (what `StoreWriter` is given)."""
        return [row[self.key] for row in self.rows]

    def fingerprints(self) -> dict[str, str]:
        """SHA-256 of each video file: a store whose videos changed is rebuilt, not resumed."""
        by_path: dict[str, str] = {}   # Aff-Wild2 _left/_right trials share one file: read it once
        for path in {row["path"] for row in self.rows}:
            by_path[path] = file_sha256(path) if os.path.isfile(path) else "missing"
        return {row[self.key]: by_path[row["path"]] for row in self.rows}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def __iter__(self) -> Iterator[dict]:
        return self.todo(())

    def todo(self, done: Iterable[str]) -> Iterator[dict]:
        """The rows not yet committed (resume), tracking the current one."""
        done = set(done)
        for row in self.rows:
            if row[self.key] not in done:
                self.current = row[self.key]
                yield row
        self.current = None


def file_key(row: dict, key: str = "video_id") -> str:
    """What a row is bucketed by: its id, less the `_left`/`_right` of an Aff-Wild2 trial (`person`),
    so the trials of one video file share a store and its process decodes the file once for both."""
    vid, person = row[key], row.get("person") or ""
    return vid[:-len(person) - 1] if person and vid.endswith("_" + person) else vid


def plan(rows: list[dict], stores: int, key: str = "video_id") -> list[list[dict]]:
    """Each store's rows in manifest order; every bucket is listed, empty ones too."""
    buckets: list[list[dict]] = [[] for _ in range(stores)]
    for row in rows:
        buckets[bucket_of(file_key(row, key), stores)].append(row)
    return buckets


def remove_stale(directory: str, stores: int) -> None:
    """Drop stores left by a run with more buckets. Safe when several ranks do it at once."""
    keep = {store_path(directory, b) for b in range(stores)}
    for stale in set(glob.glob(os.path.join(directory, "store-*.zarr"))) - keep:
        shutil.rmtree(stale, ignore_errors=True)


def distributed() -> tuple[int, int]:
    """(rank, world size) as set by torchrun; (0, 1) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def local_device(requested: str = "auto") -> str:
    """The device this process should use: its own GPU under torchrun or in a pool, else `requested`."""
    from avfusion.params import resolve_device
    device = resolve_device(requested)
    if device != "cuda":                      # "cpu", or an explicit "cuda:N" chosen by the user
        return device
    import torch
    slot = os.environ.get("LOCAL_RANK", os.environ.get(WORKER_ENV, "0"))
    return f"cuda:{int(slot) % torch.cuda.device_count()}"


def skip_video(writer: StoreWriter, video: dict, error: MediaError) -> None:
    """`on_error: skip`: commit the video with zero rows, its problem recorded in the store.

    Committing it (instead of leaving a gap) keeps the store's plan a prefix, so a resumed run neither
    retries it nor rebuilds the store, and stores stay byte-identical to an uninterrupted run. The
    reason is written before the commit: a kill in between only repeats the same write.
    """
    skipped = dict(writer.group.attrs.get("skipped", {}))
    skipped[video["video_id"]] = {"path": video["path"], "problem": str(error)}
    writer.group.attrs["skipped"] = skipped
    writer.append(video["video_id"], **{name: np.zeros((0, *tail), dtype)
                                        for name, (tail, dtype) in writer.columns.items() if name != "video"})


def write_skip_report(directory: str, stores: int, path: str) -> list[dict]:
    """Gather the skipped videos of every store into one JSON report (written even when empty)."""
    skipped = []
    for b in range(stores):
        if os.path.exists(store_path(directory, b)):
            attrs = zarr.open_group(store_path(directory, b), mode="r").attrs
            committed = set(attrs.get("videos", []))    # a kill may leave a reason without its commit
            skipped += [{"video_id": vid, **info} for vid, info in attrs.get("skipped", {}).items()
                        if vid in committed]
    skipped.sort(key=lambda s: s["video_id"])
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump({"skipped": skipped}, f, indent=2)
        f.write("\n")
    return skipped


def _run_one(extract_store: Callable, bucket: int, rows: list[dict], key: str) -> int:
    videos = Videos(rows, key)
    try:
        extract_store(bucket, videos)
    except BucketError:
        raise
    except UserError as exc:                 # bad input, not a bug: its one line says it all
        raise BucketError(bucket, videos.current, str(exc)) from exc
    except Exception as exc:                 # re-raised as a picklable error naming the video
        raise BucketError(bucket, videos.current,
                          f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}") from exc
    return bucket


def _init_worker(slots, threads: int) -> None:
    with slots.get_lock():
        os.environ[WORKER_ENV] = str(slots.value)
        slots.value += 1
    # Before torch is imported in this process: W pools of all cores each would oversubscribe the CPU.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def _run_local(buckets: list[int], planned: list[list[dict]], extract_store: Callable,
               workers: int, key: str) -> None:
    workers = min(workers, len(buckets))
    if workers <= 1:
        for b in buckets:
            _run_one(extract_store, b, planned[b], key)
        return
    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    jobs = [(extract_store, b, planned[b], key) for b in buckets]
    # The first failure surfaces at once; leaving the block terminates the other workers, which is
    # safe: their stores resume from the last committed video on the next run.
    with ctx.Pool(workers, initializer=_init_worker, initargs=(ctx.Value("i", 0), threads)) as pool:
        for _ in pool.imap_unordered(_run_job, jobs):
            pass


def _run_job(job: tuple) -> int:
    return _run_one(*job)


def run_buckets(rows: list[dict], stores: int, extract_store: Callable, workers: int = 1,
                key: str = "video_id", timeout: timedelta = timedelta(hours=48)) -> list[int]:
    """Extract every store of `rows` (see the module docstring); returns the buckets this rank wrote.

    `timeout` bounds how long a finished rank waits for the slowest one at the final meeting point.
    """
    planned = plan(rows, stores, key)
    rank, world = distributed()
    mine = list(range(rank, stores, world))
    if world <= 1:
        _run_local(mine, planned, extract_store, workers, key)
        return mine

    import torch
    import torch.distributed as dist
    own_group = not dist.is_initialized()
    if own_group:
        dist.init_process_group("gloo", timeout=timeout)
    try:
        error = None
        try:
            _run_local(mine, planned, extract_store, workers, key)
        except Exception as exc:              # tell the other ranks before raising
            error = exc
        failed = torch.tensor([0 if error is None else 1])
        dist.all_reduce(failed)               # also the barrier: returns when every rank is done
        if error is not None:
            raise error
        if failed.item():
            raise RuntimeError(f"rank {rank}: {failed.item()} other rank(s) failed; see their output")
        return mine
    finally:
        if own_group:
            dist.destroy_process_group()


def run_extraction_stage(stage: str, params: dict, out_dir: str, skip_report: str,
                         extract_store: Callable) -> None:
    """The `main` of an extraction stage: every store of the manifest, then the report of skipped videos.

    Bad input (a `MediaError` under `on_error: fail`) ends the process with its one line, no traceback.
    """
    import torch
    on_error(params, stage)
    os.makedirs(out_dir, exist_ok=True)
    remove_stale(out_dir, params["stores"])
    try:
        run_buckets(read_manifest(), params["stores"], extract_store, workers=params["workers"])
    except BucketError as exc:
        sys.exit(f"{stage}: {exc}")
    if distributed()[0] == 0:
        for s in write_skip_report(out_dir, params["stores"], skip_report):
            print(f"{stage}: skipped {s['problem']}")
    print(f"{stage}: {params['stores']} stores in {out_dir} (torch threads {torch.get_num_threads()})")
