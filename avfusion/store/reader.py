"""Reading stores: every committed video of a directory's stores, embeddings memory-mapped (docs/design.md §5.5)."""
from __future__ import annotations

import glob
import mmap
import os
from dataclasses import dataclass

import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec

from avfusion.errors import DatasetError
from avfusion.store.layout import ABSENT, BASE_COLUMNS


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
