"""The extraction runner: every extractor's stage is `run_stage(Extractor, params)`.

The extractor (avfusion/extraction/base.py) says what it is and gives the rows of one video; the runner
does the rest, the same way for all: its weight files (avfusion/extraction/weights.py), the per-video
loop, store writing and resume (avfusion/store/), skip-on-error and its report, the progress bar, the
process pool and torchrun ranks, stale stores, the frame times of each file (from the dataset stage),
and sharing one file's rows between the trials that read it (Aff-Wild2 `_left` / `_right`), keyed by the manifest's `media` column.

Sharding (docs/design.md §5): parallel writes into one Zarr shard lose data silently, so the unit of
parallelism is the store, never the video. A store's plan is its videos in manifest order, bucketed by
their media file (`plan`), the same whether one process writes all stores or many processes / machines
each write a few, so the stores come out byte-identical either way:
- one process, `workers` <= 1: stores are written in this process, in order;
- `workers` > 1: stores are written by a pool of spawned processes (CUDA and Zarr do not survive fork);
- under `torchrun` (`WORLD_SIZE` > 1): rank r takes stores r, r+W, r+2W, ... (with its own pool if
  `workers` > 1), then all ranks meet in a gloo all-reduce, so every rank returns only when all stores
  are done (or raises when any rank failed). Ranks on several machines must share the data directory.
"""
from __future__ import annotations

import glob
import json
import multiprocessing as mp
import os
import shutil
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import zarr
from tqdm import tqdm

from avfusion import paths
from avfusion.errors import MediaError, UserError
from avfusion.extraction.base import Extractor, Video
from avfusion.extraction.weights import materialise
from avfusion.params import resolve_device
from avfusion.sources.manifest import read_frame_times, read_manifest
from avfusion.store.layout import bucket_of, store_path
from avfusion.store.writer import StoreWriter

WORKER_ENV = "AVFUSION_WORKER"     # the slot (0..workers-1) of a pool process, for picking a GPU


@dataclass(frozen=True)
class Job:
    """What every process needs to write its stores (picklable: the extractor travels as a class)."""
    extractor: type[Extractor]
    params: dict
    out_dir: str
    provenance: dict


class StoreFailure:
    """Extraction of one store failed; names the store, the video (when known) and the cause. All in
    `args`, so it pickles across pool processes and ranks."""

    def __init__(self, bucket: int, video: str | None, detail: str):
        super().__init__(bucket, video, detail)
        self.bucket, self.video, self.detail = bucket, video, detail

    def __str__(self) -> str:
        where = f"store {self.bucket}" + (f", video {self.video}" if self.video else "")
        return f"{where}: {self.detail}"


class BucketError(StoreFailure, UserError):
    """Bad input (a video, a weights file) stopped a store: one line for the user."""


class ExtractionCrash(StoreFailure, RuntimeError):
    """A bug stopped a store: the message carries the worker's traceback."""


class Videos(Sequence):
    """The manifest rows of one store, in plan order; iterating records the video being extracted."""

    def __init__(self, rows: list[dict]):
        self.rows, self.current = rows, None

    @property
    def ids(self) -> list[str]:
        """The store's plan (what `StoreWriter` is given)."""
        return [row["video_id"] for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def todo(self, done: Iterable[str]) -> Iterator[dict]:
        """The rows not yet committed (resume), tracking the current one."""
        done = set(done)
        for row in self.rows:
            if row["video_id"] not in done:
                self.current = row["video_id"]
                yield row
        self.current = None


def plan(rows: list[dict], stores: int) -> list[list[dict]]:
    """Each store's rows in manifest order, bucketed by media file: the trials of one file share a
    store, so its process can extract the file once for all of them. Every bucket is listed."""
    buckets: list[list[dict]] = [[] for _ in range(stores)]
    for row in rows:
        buckets[bucket_of(row["media"], stores)].append(row)
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
    # paths as the manifest has them, relative to the project: stores are the same in every clone
    relative = os.path.relpath(video["path"], paths.root())
    skipped[video["video_id"]] = {"path": relative, "problem": str(error).replace(video["path"], relative)}
    writer.group.attrs["skipped"] = skipped
    empty = lambda columns: {name: np.zeros((0, *tail), dtype) for name, (tail, dtype) in columns.items()   # noqa: E731
                             if name != "video"}
    writer.append(video["video_id"], **empty(writer.columns),
                  **{name: empty(columns) for name, columns in writer.row_sets.items()})


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


def video_of(row: dict) -> Video:
    """An extractor's view of a manifest row, with its frame times."""
    return Video(id=row["video_id"], path=row["path"], times=read_frame_times(row), person=row["person"],
                 media=row["media"])


def write_store(job: Job, extractor: Extractor, bucket: int, videos: Videos) -> None:
    """Write one store, resuming after its last commit. A store with nothing left to do reads no video:
    the videos' fingerprints come from the manifest, and the models are loaded only for work."""
    # The manifest's SHA-256 of each video: a store whose videos changed is rebuilt, not resumed.
    provenance = {**job.provenance, "videos_sha256": {v["video_id"]: v["sha256"] for v in videos}}
    writer = StoreWriter(store_path(job.out_dir, bucket), extractor.dim, provenance, videos.ids,
                         extractor.columns, extractor.row_sets)
    done = set(writer.committed)
    todo = [v for v in videos if v["video_id"] not in done]
    if not todo:
        return
    extractor.ensure_loaded()
    skip = job.params.get("on_error") == "skip"      # validated by the stage's load_params
    # per_file extractors: a file's rows are kept until the last of its trials in this store is written
    uses, shared = Counter(v["media"] for v in todo), {}
    began, frames = time.perf_counter(), 0
    with tqdm(videos.todo(done), desc=f"{extractor.name} store {bucket}", unit="video",
              initial=len(done), total=len(videos), position=int(os.environ.get(WORKER_ENV, 0))) as bar:
        for row in bar:
            media = row["media"]
            uses[media] -= 1
            try:
                video = video_of(row)
                extracted = shared.pop(media) if media in shared else extractor.file_rows(video)
            except MediaError as exc:
                if not skip:
                    raise
                skip_video(writer, row, exc)
                continue
            if extractor.per_file and uses[media]:
                shared[media] = extracted
            rows = extractor.trial_rows(extracted, video)
            n = len(rows["time"])
            if n != len(video.times):
                raise RuntimeError(f"{video.id}: {extractor.name} gave {n} rows for {len(video.times)} frames")
            writer.append(video.id, frame=np.arange(n), **rows)
            frames += n
            bar.set_postfix(frames_per_s=f"{frames / (time.perf_counter() - began):.1f}")


def _run_one(job: Job, extractor: Extractor, bucket: int, rows: list[dict]) -> int:
    videos = Videos(rows)
    try:
        write_store(job, extractor, bucket, videos)
    except UserError as exc:                 # bad input, not a bug: its one line says it all
        raise BucketError(bucket, videos.current, str(exc)) from exc
    except Exception as exc:                 # re-raised as a picklable error naming the video
        raise ExtractionCrash(bucket, videos.current,
                          f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}") from exc
    return bucket


_worker_extractor: Extractor | None = None    # a pool process's extractor, built once per process


def _init_worker(slots, threads: int, job: Job) -> None:
    global _worker_extractor
    with slots.get_lock():
        os.environ[WORKER_ENV] = str(slots.value)
        slots.value += 1
    # Before torch is imported in this process: W pools of all cores each would oversubscribe the CPU.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    _worker_extractor = job.extractor(job.params, local_device(job.params.get("device", "auto")))


def _run_job(args: tuple) -> int:
    job, bucket, rows = args
    return _run_one(job, _worker_extractor, bucket, rows)


def _run_local(job: Job, extractor: Extractor, buckets: list[int], planned: list[list[dict]]) -> None:
    workers = min(job.params.get("workers", 1), len(buckets))
    if workers <= 1:
        for b in buckets:
            _run_one(job, extractor, b, planned[b])
        return
    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    # The first failure surfaces at once; leaving the block terminates the other workers, which is
    # safe: their stores resume from the last committed video on the next run.
    with ctx.Pool(workers, initializer=_init_worker, initargs=(ctx.Value("i", 0), threads, job)) as pool:
        for _ in pool.imap_unordered(_run_job, [(job, b, planned[b]) for b in buckets]):
            pass


def run_extraction(extractor_cls: type[Extractor], params: dict, rows: list[dict], out_dir: str,
                   timeout: timedelta = timedelta(hours=48)) -> list[int]:
    """Write every store of `rows` (manifest rows) with an `extractor_cls` (see the module docstring); returns
    the stores this rank wrote. `params` is the extractor's section (`stores`, `workers`, `device`,
    `on_error` and its own keys). `timeout` bounds how long a finished rank waits for the slowest one.
    """
    stores = params["stores"]
    extractor = extractor_cls(params, local_device(params.get("device", "auto")))
    # The provenance (weights hashed) once here, not in every store or worker.
    job = Job(extractor_cls, params, out_dir, extractor.provenance())
    planned = plan(rows, stores)
    rank, world = distributed()
    mine = list(range(rank, stores, world))
    if world <= 1:
        _run_local(job, extractor, mine, planned)
        return mine

    import torch
    import torch.distributed as dist
    own_group = not dist.is_initialized()
    if own_group:
        dist.init_process_group("gloo", timeout=timeout)
    try:
        error = None
        try:
            _run_local(job, extractor, mine, planned)
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


def run_stage(extractor: type[Extractor], params: dict) -> None:
    """The `main` of an extraction stage: its weight files into data/weights/<name>, every store of the
    manifest into data/features/<name>, then the report of skipped videos. Bad input (a `MediaError`
    under `on_error: fail`) raises BucketError, a UserError that names the store and the video."""
    import torch
    name, out_dir = extractor.name, paths.features_dir(extractor.name)
    reason = extractor.available()
    if reason:
        raise UserError(reason)
    rows = read_manifest()
    materialise(extractor, params)
    os.makedirs(out_dir, exist_ok=True)
    remove_stale(out_dir, params["stores"])
    run_extraction(extractor, params, rows, out_dir)
    if distributed()[0] == 0:
        for s in write_skip_report(out_dir, params["stores"], paths.skip_report(name)):
            print(f"{name}: skipped {s['problem']}")
    print(f"{name}: {params['stores']} stores in {os.path.relpath(out_dir, paths.root())} "
          f"(torch threads {torch.get_num_threads()})")
