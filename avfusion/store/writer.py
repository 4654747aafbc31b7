"""Writing a store: one writer per store, each video written whole and then committed (docs/design.md §5.4)."""
from __future__ import annotations

import glob
import os
import shutil

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from avfusion.store.layout import BASE_COLUMNS, FORMAT, ROWS_PER_CHUNK, ROWS_PER_SHARD


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


