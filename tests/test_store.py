"""The Zarr feature store: round trip, commit per video, resume byte-identical, provenance, few files."""
import glob
import os

import numpy as np
import pytest
import zarr

from avfusion.errors import DatasetError
from avfusion.store.layout import bucket_of, store_path
from avfusion.store.reader import FeatureReader
from avfusion.store.writer import FORMAT, StoreWriter

from conftest import tree_digest

PLAN = ["v0", "v1", "v2"]


def video_rows(i: int, dim: int = 8) -> dict:
    n = 50 + 37 * i
    rng = np.random.default_rng(i)
    return {"embedding": rng.normal(size=(n, dim)).astype(np.float32), "valid": rng.random(n) > 0.2,
            "frame": np.arange(n), "time": np.arange(n) / 25.0, "box": rng.random((n, 4))}


def write(path, stop_before=None, provenance=None):
    writer = StoreWriter(path, 8, provenance or {"extractor": "test"}, PLAN, columns={"box": ((4,), "float32")})
    for i, vid in enumerate(PLAN):
        if vid in writer.committed:
            continue
        if i == stop_before:
            return writer
        writer.append(vid, **video_rows(i))
    return writer


def test_round_trip_rows_and_metadata(tmp_path):
    write(store_path(str(tmp_path), 0))
    reader = FeatureReader(str(tmp_path))
    assert reader.videos == PLAN
    assert reader.dim == 8
    assert reader.provenance == {"format": FORMAT, "extractor": "test"}
    for i, vid in enumerate(PLAN):
        expected = video_rows(i)
        rows = reader.rows(vid, columns=("embedding", "valid", "frame", "time", "box", "video"))
        np.testing.assert_array_equal(rows["embedding"], expected["embedding"])
        np.testing.assert_array_equal(rows["valid"], expected["valid"])
        np.testing.assert_array_equal(rows["frame"], expected["frame"])
        np.testing.assert_allclose(rows["box"], expected["box"].astype(np.float32))
        assert (rows["video"] == i).all()   # every row carries its video


def test_window_read_matches_slice(tmp_path):
    write(store_path(str(tmp_path), 0))
    reader = FeatureReader(str(tmp_path))
    window = reader.rows("v2", start=20, stop=80)["embedding"]
    np.testing.assert_array_equal(window, video_rows(2)["embedding"][20:80])


def test_interrupted_write_resumes_byte_identical(tmp_path):
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    write(store_path(full, 0))
    writer = write(store_path(cut, 0), stop_before=2)
    # Simulate a kill in the middle of video 2: rows written, commit record not updated.
    rows = video_rows(2)
    writer.group["embedding"].resize((writer.group.attrs["offsets"][-1] + 10, 8))
    writer.group["embedding"][-10:] = rows["embedding"][:10]
    assert FeatureReader(cut).videos == ["v0", "v1"]      # uncommitted rows are invisible
    resumed = write(store_path(cut, 0))
    assert resumed.committed == PLAN
    assert tree_digest(full) == tree_digest(cut)


def test_commit_is_one_metadata_write(tmp_path, monkeypatch):
    """The commit record (`videos` and every `*_offsets`) lands in one zarr.json write, after the rows:
    a kill can only fall before or after it. (zarr's `attrs.update` writes once per key: a kill between
    the writes once left `videos` a video ahead of `offsets`.)"""
    path = store_path(str(tmp_path), 0)
    writer = StoreWriter(path, 8, {"extractor": "test"}, PLAN, columns={"box": ((4,), "float32")},
                         row_sets={"people": PEOPLE})
    writes, put = [], zarr.storage.LocalStore.set

    async def recorded(store, key, value):
        writes.append(key)
        return await put(store, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", recorded)
    writer.append("v0", **video_rows(0), people=people_rows(0))
    assert writes.count("zarr.json") == 1 and writes[-1] == "zarr.json"
    attrs = zarr.open_group(path, mode="r").attrs
    assert (attrs["videos"], attrs["offsets"], attrs["people_offsets"]) == (["v0"], [0, 50], [0, 3])


def test_torn_commit_record_is_rebuilt_and_refused_by_readers(tmp_path):
    full, torn = str(tmp_path / "full"), str(tmp_path / "torn")
    write(store_path(full, 0))
    writer = write(store_path(torn, 0), stop_before=2)
    writer.group.attrs["videos"] = PLAN[:2] + ["v2"]      # what the old two-write commit left after a kill
    with pytest.raises(DatasetError, match="torn commit record"):
        FeatureReader(torn)
    assert write(store_path(torn, 0)).committed == PLAN   # not trusted: rebuilt, and ends identical
    assert tree_digest(full) == tree_digest(torn)


def test_changed_provenance_rebuilds_the_store(tmp_path):
    path = store_path(str(tmp_path), 0)
    write(path, stop_before=2)
    writer = StoreWriter(path, 8, {"extractor": "other"}, PLAN, columns={"box": ((4,), "float32")})
    assert writer.committed == []


def test_changed_plan_rebuilds_the_store(tmp_path):
    path = store_path(str(tmp_path), 0)
    write(path, stop_before=2)
    writer = StoreWriter(path, 8, {"extractor": "test"}, ["v0", "new", "v1"], columns={"box": ((4,), "float32")})
    assert writer.committed == []


def test_missing_or_misshaped_column_is_refused(tmp_path):
    writer = StoreWriter(store_path(str(tmp_path), 0), 8, {}, PLAN, columns={"box": ((4,), "float32")})
    rows = video_rows(0)
    with pytest.raises(ValueError, match="missing columns"):
        writer.append("v0", **{k: v for k, v in rows.items() if k != "box"})
    with pytest.raises(ValueError, match="shape"):
        writer.append("v0", **{**rows, "valid": rows["valid"][:-1]})
    assert writer.committed == []


def test_no_pickled_objects_in_store(tmp_path):
    write(store_path(str(tmp_path), 0))
    for path in glob.glob(str(tmp_path / "**" / "zarr.json"), recursive=True):
        assert b"pickle" not in open(path, "rb").read().lower()
    group = zarr.open_group(store_path(str(tmp_path), 0), mode="r")
    assert all(group[name].dtype.kind in "fbiu" for name in group.array_keys())


def test_few_files_for_many_videos(tmp_path):
    plan = [f"video-{i:03d}" for i in range(100)]
    stores = {}
    for vid in plan:
        b = bucket_of(vid, 2)
        stores.setdefault(b, []).append(vid)
    for b, vids in stores.items():
        writer = StoreWriter(store_path(str(tmp_path), b), 8, {}, vids)
        for vid in vids:
            writer.append(vid, embedding=np.ones((30, 8)), valid=np.ones(30, bool),
                          frame=np.arange(30), time=np.arange(30.0))
    files = [p for p in glob.glob(str(tmp_path / "**"), recursive=True) if os.path.isfile(p)]
    assert len(files) <= 100 / 10 * 3   # 2 stores x (group + 5 arrays x (meta + shard))
    assert len(FeatureReader(str(tmp_path)).videos) == 100


def test_bucket_is_stable():
    # pinned values: a changed hash would move every committed video to another store
    assert [bucket_of(v, 4) for v in ("video-7", "demo-00", "demo-01", "demo-02", "demo-03")] == [0, 0, 2, 0, 2]
    assert {bucket_of(f"v{i}", 4) for i in range(100)} == {0, 1, 2, 3}


def test_memory_mapped_reads_match_zarr(tmp_path):
    """The raw shard reader must agree with zarr itself: partial chunks, absent (all-zero) chunks, shard edges."""
    from avfusion.store import reader as store
    path = store_path(str(tmp_path), 0)
    plan = [f"v{i}" for i in range(6)]
    writer = StoreWriter(path, 8, {}, plan)
    rng = np.random.default_rng(0)
    for i, vid in enumerate(plan):
        n = [1, 700, 300, 5000, 17000, 40][i]        # crosses chunk (256) and shard (16384) boundaries
        emb = rng.normal(size=(n, 8)).astype(np.float32)
        if i == 3:
            emb[:600] = 0                             # whole chunks of fill value are never written
        writer.append(vid, embedding=emb, valid=np.ones(n, bool), frame=np.arange(n), time=np.arange(n) / 25)
    reader = FeatureReader(str(tmp_path))
    assert "embedding" in reader.raw[0]
    group = zarr.open_group(path, mode="r")
    for vid in plan:
        _, lo, hi = reader.index[vid]
        for a, b in [(0, hi - lo), (0, min(1, hi - lo)), ((hi - lo) // 3, (hi - lo) // 2 + 1)]:
            np.testing.assert_array_equal(reader.rows(vid, columns=("embedding",), start=a, stop=b)["embedding"],
                                          group["embedding"][lo + a:lo + b])
    assert store.RawShardReader.supports(group["embedding"]) and not store.RawShardReader.supports(group["valid"])


PEOPLE = {"person": ((), "int32"), "box": ((4,), "float32")}


def people_rows(i: int) -> dict:
    """A row set's rows for video i: 3 + i rows (not one per frame)."""
    return {"person": np.arange(3 + i) % 2, "box": np.full((3 + i, 4), i, np.float32)}


def test_row_set_committed_with_its_video_and_truncated_on_resume(tmp_path):
    path = store_path(str(tmp_path / "s"), 0)
    writer = StoreWriter(path, 8, {"extractor": "test"}, PLAN, columns={"box": ((4,), "float32")}, row_sets={"people": PEOPLE})
    for i in range(2):
        writer.append(PLAN[i], **video_rows(i), people=people_rows(i))
    # a kill during video 2: its row-set rows are written, the commit record is not
    writer.group["people"]["person"].resize((3 + 4 + 5,))
    writer.group["people"]["person"][7:] = 9
    writer = StoreWriter(path, 8, {"extractor": "test"}, PLAN, columns={"box": ((4,), "float32")}, row_sets={"people": PEOPLE})
    assert writer.group["people"]["person"].shape == (7,)
    writer.append(PLAN[2], **video_rows(2), people=people_rows(2))
    reader = FeatureReader(str(tmp_path / "s"))
    assert "people" not in reader.arrays[0]                  # per-frame readers see only per-frame arrays
    for i, vid in enumerate(PLAN):
        rows = reader.row_set(vid, "people")
        assert set(rows) == {"person", "box"}
        np.testing.assert_array_equal(rows["person"], people_rows(i)["person"])
        np.testing.assert_array_equal(rows["box"], people_rows(i)["box"])
        assert reader.length(vid) == len(video_rows(i)["time"])
    with pytest.raises(ValueError, match="people"):
        writer.append("v3", **video_rows(0), people={"person": np.zeros(2)})
