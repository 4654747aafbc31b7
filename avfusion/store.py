"""Frame-level feature stores: one Zarr v3 group per bucket of videos, flat `[N, D]` rows.

Why this shape (docs/design.md §5): DVC hashes and moves files one by one, so a store holds many videos in
a few sharded files, while a 300-frame window still touches only a few small chunks.

Layout of `<dir>/store-XX.zarr`:
    embedding [N, D] float32     video [N] int32 (index into attrs.videos)
    valid     [N]    bool        frame [N] int32 (0-based index of the decoded frame)
    time      [N]    float64     ...extra per-row columns of an extractor (e.g. box [N, 4])
    attrs: provenance (extractor, params, weights hash), videos, offsets (the commit record)
    <set>/...  optional row sets: subgroups of flat arrays not one row per frame (e.g. `people`: one row
               per tracked face), each with its own `video` column and `<set>_offsets` in the commit record

One writer per store. A video is committed when its rows are written and then `videos`/`offsets` are
updated; an interrupted run drops uncommitted rows and resumes after the last committed video, ending
byte-identical to an uninterrupted run (extraction is deterministic and chunks are rewritten whole).
"""
from __future__ import annotations

import glob
import hashlib
import mmap
import os
import shutil
import zlib
from dataclasses import dataclass

import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec

from avfusion.errors import DatasetError

FORMAT = "avfusion-features/2"   # 2: embeddings stored uncompressed (memory-mapped reads)
ROWS_PER_CHUNK = 256          # a 300-frame window reads 2-3 chunks per array
ROWS_PER_SHARD = 16384        # ~32 MB of 512-d float32 per shard file
ABSENT = 2**64 - 1            # shard index entry of a chunk never written (all fill value)
BASE_COLUMNS = {"valid": ((), "bool"), "frame": ((), "int32"), "time": ((), "float64"),
                "video": ((), "int32")}


def bucket_of(video_id: str, stores: int) -> int:
    """Stable bucket of a video: adding videos never moves the others to another store."""
    return zlib.crc32(video_id.encode()) % stores


def store_path(directory: str, bucket: int) -> str:
    return os.path.join(directory, f"store-{bucket:02d}.zarr")


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class StoreWriter:
    """Appends videos to one store; reopening with the same provenance resumes, otherwise starts over.

    `columns` maps extra per-row column names to (trailing shape, dtype), e.g. {"box": ((4,), "float32")}.
    `plan` is the ordered list of video ids this store will hold; committed videos must be a prefix
    of it, else the store is stale (the manifest changed) and is rebuilt.
    `row_sets` maps a subgroup name to its columns (as `columns`; a `video` column is added): rows of
    a video that are not one per frame. They are written with the video's rows and committed with them.
    """

    def __init__(self, path: str, dim: int, provenance: dict, plan: list[str],
                 columns: dict[str, tuple[tuple[int, ...], str]] | None = None,
                 row_sets: dict[str, dict[str, tuple[tuple[int, ...], str]]] | None = None):
        self.path = path
        self.columns = {"embedding": ((dim,), "float32"), **BASE_COLUMNS, **(columns or {})}
        self.row_sets = {name: {**cols, "video": ((), "int32")} for name, cols in (row_sets or {}).items()}
        provenance = {"format": FORMAT, **provenance}
        if os.path.exists(path) and not self._resumable(provenance, plan):
            shutil.rmtree(path)
        if os.path.exists(path):
            self.group = zarr.open_group(path, mode="r+")
            for tmp in glob.glob(os.path.join(path, "**", "*.partial"), recursive=True):
                os.remove(tmp)   # a write cut off by a kill; zarr renames only complete files
            self._truncate()
        else:
            self.group = zarr.open_group(path, mode="w")
            _create_arrays(self.group, self.columns)
            for name, cols in self.row_sets.items():
                _create_arrays(self.group.create_group(name), cols)
            self.group.update_attributes({"provenance": provenance, "videos": [], "offsets": [0],
                                          **{f"{name}_offsets": [0] for name in self.row_sets}})

    def _resumable(self, provenance: dict, plan: list[str]) -> bool:
        try:
            attrs = zarr.open_group(self.path, mode="r").attrs
            done = list(attrs["videos"])
            # A record torn by a kill (older versions wrote its keys one by one) is not trusted.
            whole = all(len(attrs[key]) == len(done) + 1 for key in self._offset_keys())
            return whole and attrs["provenance"] == provenance and done == plan[:len(done)]
        except Exception:   # unreadable leftovers: rebuild
            return False

    def _offset_keys(self) -> list[str]:
        return ["offsets", *(f"{name}_offsets" for name in self.row_sets)]

    def _truncate(self) -> None:
        for group, columns, offsets in self._groups():
            for name, (tail, _) in columns.items():
                group[name].resize((offsets[-1], *tail))

    def _groups(self):
        """(group, columns, committed offsets) of the per-frame rows and of each row set."""
        yield self.group, self.columns, self.group.attrs["offsets"]
        for name, columns in self.row_sets.items():
            yield self.group[name], columns, self.group.attrs[f"{name}_offsets"]

    @property
    def committed(self) -> list[str]:
        return list(self.group.attrs["videos"])

    def append(self, video_id: str, **rows) -> None:
        """Write one whole video's rows, then commit it. Every column must be given, same length; each
        row set's rows come as one argument, a dict of its columns."""
        index = len(self.committed)
        ends = {"offsets": _write_rows(self.group, self.columns, rows, index, self.group.attrs["offsets"][-1], video_id)}
        for name, columns in self.row_sets.items():
            ends[f"{name}_offsets"] = _write_rows(self.group[name], columns, rows[name], index,
                                                  self.group.attrs[f"{name}_offsets"][-1], f"{video_id} {name}")
        # The commit point: readers and resumes only trust rows listed here. One zarr.json write, so a
        # kill cannot tear it (`attrs.update` would write the file once per key).
        self.group.update_attributes({"videos": self.committed + [video_id],
                                      **{key: list(self.group.attrs[key]) + [end] for key, end in ends.items()}})


def _create_arrays(group: zarr.Group, columns: dict[str, tuple[tuple[int, ...], str]]) -> None:
    for name, (tail, dtype) in columns.items():
        group.create_array(
            name, shape=(0, *tail), dtype=dtype, fill_value=0,
            chunks=(ROWS_PER_CHUNK if tail else 4096, *tail),
            shards=(ROWS_PER_SHARD if tail else 1 << 20, *tail),
            # Embeddings barely compress (5.9 -> 5.3 MB on the demo) and raw chunks can be
            # memory-mapped (RawShardReader); the small columns compress well.
            compressors=None if tail else ZstdCodec(level=3))


def _write_rows(group: zarr.Group, columns: dict, rows: dict, video: int, start: int, what: str) -> int:
    """Write `rows` (every column but `video`, same length) at row `start`; returns the end row."""
    missing = set(columns) - {"video"} - set(rows)
    if missing:
        raise ValueError(f"{what}: missing columns {sorted(missing)}")
    n = len(next(rows[name] for name in columns if name != "video"))
    rows = {**rows, "video": np.full(n, video, np.int32)}
    for name, (tail, dtype) in columns.items():
        data = np.asarray(rows[name], dtype=dtype)
        if data.shape != (n, *tail):
            raise ValueError(f"{what}: column {name} has shape {data.shape}, expected {(n, *tail)}")
        array = group[name]
        array.resize((start + n, *tail))
        if n:
            array[start:start + n] = data
    return start + n


@dataclass
class VideoRows:
    video_id: str
    columns: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]


class RawShardReader:
    """Rows of an uncompressed, sharded `[N, D]` Zarr array, read straight from memory-mapped shards.

    zarr's own read path costs ~3 ms per call whatever the size; a window read here is a memory copy,
    like a numpy memmap (`zarr_vs_memmap_read_ratio` in reports/bench.md). The layout is zarr v3's
    sharding codec: raw little-endian chunks, then an index of (offset, nbytes) per chunk and its
    CRC32C at the end of the shard file; absent chunks (all fill value) read as zeros. Pages a read
    copied are released from the mapping at once (they stay in the OS page cache), so reading a whole
    store, as an out-of-core epoch does, leaves the process's memory flat.
    """

    def __init__(self, array: zarr.Array, directory: str):
        self.rows_per_chunk, self.dim = array.chunks
        self.chunks_per_shard = array.shards[0] // self.rows_per_chunk
        self.dtype = np.dtype(array.dtype).newbyteorder("<")
        self.fill = array.fill_value
        self.directory = directory
        self.chunk_key = array.metadata.chunk_key_encoding.encode_chunk_key
        self.shards: dict[int, tuple[mmap.mmap, np.ndarray] | None] = {}

    @staticmethod
    def supports(array: zarr.Array) -> bool:
        codecs = array.metadata.codecs
        return (array.ndim == 2 and len(codecs) == 1 and isinstance(codecs[0], ShardingCodec)
                and codecs[0].index_location.value == "end"
                and [type(c) for c in codecs[0].codecs] == [BytesCodec]
                and [type(c) for c in codecs[0].index_codecs] == [BytesCodec, Crc32cCodec])

    def _shard(self, s: int):
        if s not in self.shards:
            path = os.path.join(self.directory, self.chunk_key((s, 0)))
            if not os.path.exists(path):
                self.shards[s] = None
            else:
                with open(path, "rb") as f:
                    data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                index_bytes = 16 * self.chunks_per_shard
                index = np.frombuffer(data, "<u8", 2 * self.chunks_per_shard, len(data) - index_bytes - 4)
                self.shards[s] = (data, index.reshape(-1, 2).copy())
        return self.shards[s]

    def read(self, start: int, stop: int) -> np.ndarray:
        out = np.full((stop - start, self.dim), self.fill, dtype=self.dtype.newbyteorder("="))
        rpc = self.rows_per_chunk
        for c in range(start // rpc, (stop - 1) // rpc + 1 if stop > start else 0):
            s, i = divmod(c, self.chunks_per_shard)
            shard = self._shard(s)
            if shard is None or shard[1][i, 0] == ABSENT:
                continue
            offset = int(shard[1][i, 0])
            chunk = np.frombuffer(shard[0], self.dtype, count=rpc * self.dim, offset=offset).reshape(rpc, self.dim)
            lo, hi = max(start, c * rpc), min(stop, (c + 1) * rpc)
            out[lo - start:hi - start] = chunk[lo - c * rpc:hi - c * rpc]
            page = offset - offset % mmap.PAGESIZE
            shard[0].madvise(mmap.MADV_DONTNEED, page, offset + chunk.nbytes - page)
        return out


class FeatureReader:
    """Reads every committed video of every store in a directory (each process opens its own).

    Arrays are opened once, and the small per-row columns (valid, frame, time, video: ~17 bytes a
    row) are read into memory up front, so a random window costs one embedding read.
    """

    def __init__(self, directory: str):
        paths = sorted(glob.glob(os.path.join(directory, "store-*.zarr")))
        if not paths:
            raise DatasetError(f"{directory}: no feature stores (run the extraction stage first)")
        self.directory = directory
        self.groups = [zarr.open_group(p, mode="r") for p in paths]
        self.arrays: list[dict[str, zarr.Array]] = [dict(g.arrays()) for g in self.groups]
        self.index: dict[str, tuple[int, int, int]] = {}   # id -> (store, start, stop)
        self.in_memory: list[dict[str, np.ndarray]] = []
        for s, group in enumerate(self.groups):
            offsets = group.attrs["offsets"]
            if len(offsets) != len(group.attrs["videos"]) + 1:
                raise DatasetError(f"{paths[s]}: torn commit record (a run killed by an older version); "
                                   "re-run its extraction stage to rebuild it")
            for i, vid in enumerate(group.attrs["videos"]):
                self.index[vid] = (s, offsets[i], offsets[i + 1])
            # Only committed rows: a store being written may hold uncommitted ones past the end.
            self.in_memory.append({c: self.arrays[s][c][:offsets[-1]] for c in BASE_COLUMNS})
        self.raw = [{name: RawShardReader(array, os.path.join(paths[s], name))
                     for name, array in arrays.items() if RawShardReader.supports(array)}
                    for s, arrays in enumerate(self.arrays)]

    @property
    def videos(self) -> list[str]:
        return sorted(self.index)

    @property
    def provenance(self) -> dict:
        return dict(self.groups[0].attrs["provenance"])

    @property
    def dim(self) -> int:
        return int(self.arrays[0]["embedding"].shape[1])

    def rows(self, video_id: str, columns=("embedding", "valid", "frame", "time"),
             start: int = 0, stop: int | None = None) -> VideoRows:
        """Rows [start, stop) of one video (frame indices, 0-based)."""
        if video_id not in self.index:
            raise KeyError(f"{video_id}: not in the feature stores under {self.directory}")
        s, lo, hi = self.index[video_id]
        stop = hi - lo if stop is None else min(stop, hi - lo)
        a, b = lo + start, lo + stop
        memory, raw, arrays = self.in_memory[s], self.raw[s], self.arrays[s]
        return VideoRows(video_id, {c: memory[c][a:b].copy() if c in memory else
                                    raw[c].read(a, b) if c in raw else arrays[c][a:b] for c in columns})

    def row_set(self, video_id: str, name: str) -> dict[str, np.ndarray]:
        """Every column of one video's rows in row set `name` (e.g. `people`)."""
        if video_id not in self.index:
            raise KeyError(f"{video_id}: not in the feature stores under {self.directory}")
        group = self.groups[self.index[video_id][0]]
        i = list(group.attrs["videos"]).index(video_id)
        a, b = group.attrs[f"{name}_offsets"][i:i + 2]
        return {c: array[a:b] for c, array in group[name].arrays() if c != "video"}

    def length(self, video_id: str) -> int:
        _, lo, hi = self.index[video_id]
        return hi - lo
