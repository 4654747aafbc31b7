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

import os
import zlib

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
