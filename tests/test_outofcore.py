"""Out-of-core splits on tiny real stores: the same batches, models and predictions as in memory."""
import glob
import os

import numpy as np
import pytest
import torch
import yaml
from test_train import FUSION, TRAIN
from test_windows import DIM_AUDIO, DIM_VISUAL, make_dataset

from avfusion.errors import ParamsError
from avfusion.learning import evaluate, outofcore, train
from avfusion.learning.outofcore import StoreSplit, choose_data, feature_bytes, open_split
from avfusion.learning.windows import load_split, predict_split
from avfusion.sources.manifest import read_manifest
from avfusion.store.reader import FeatureReader
from avfusion.store.writer import StoreWriter

from conftest import project_root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    # Label files one row longer than the features (odd videos) leave rows the stores do not hold.
    data = make_dataset(str(tmp_path_factory.mktemp("outofcore")))
    return data, read_manifest(os.path.join(data, "manifest.csv"))


def both(data, entries):
    dirs = os.path.join(data, "features/facenet"), os.path.join(data, "features/openl3")
    return load_split(entries, *dirs), open_split(entries, *dirs, "cpu", "stores")


def test_store_split_gathers_the_same_batches(dataset):
    data, manifest = dataset
    memory, stores = both(data, manifest)
    assert isinstance(stores, StoreSplit)
    assert stores.video_ids == memory.video_ids and np.array_equal(stores.offsets, memory.offsets)
    assert stores.visual.shape == tuple(memory.visual.shape) == (len(memory), DIM_VISUAL)
    assert stores.audio.shape[1] == DIM_AUDIO
    assert np.array_equal(stores.labels_numpy(), memory.labels_numpy())
    assert stores.video_slices() == memory.video_slices()
    for window, hop in ((16, 8), (32, 5), (200, 50)):   # 200: longer than every video, mostly padding
        windows = memory.windows(window, hop)
        assert torch.equal(windows, stores.windows(window, hop))
        order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(window))
        for batch in order.split(7):
            a, b = memory.gather(windows[batch], window), stores.gather(windows[batch], window)
            assert a.keys() == b.keys()
            for name in a:   # bytes, not values: padding rows must keep their sign of zero too
                assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
                assert a[name].numpy().tobytes() == b[name].numpy().tobytes(), name
    rows = torch.tensor([[0, len(memory) - 1], [3, 3]])   # any shape of index, repeated rows
    assert torch.equal(stores.visual[rows], memory.visual[rows])
    assert torch.equal(stores.audio[rows[0]], memory.audio[rows[0]])


def rss_file_kb() -> int:
    """Resident pages of files mapped into this process (e.g. stores read through mmap)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_reading_a_whole_store_leaves_no_mapped_pages_resident(tmp_path):
    rows, dim = 40_000, 256   # 41 MB in 3 shard files
    path = str(tmp_path / "store-00.zarr")
    writer = StoreWriter(path, dim, {"extractor": "test"}, ["a", "b"])
    embedding = np.random.default_rng(0).standard_normal((rows, dim), dtype=np.float32)
    for vid, part in (("a", embedding[:25_000]), ("b", embedding[25_000:])):
        writer.append(vid, embedding=part, valid=np.ones(len(part), bool), frame=np.arange(len(part)),
                      time=np.arange(len(part)) / 30)
    reader = FeatureReader(str(tmp_path))
    before = rss_file_kb()
    for vid in ("a", "b"):
        for start in range(0, reader.length(vid), 1000):
            reader.rows(vid, columns=("embedding",), start=start, stop=start + 1000)
    assert rss_file_kb() - before < 4_000   # KB: the 41 MB read are not kept mapped
    read = np.concatenate([reader.rows(vid, columns=("embedding",))["embedding"] for vid in ("a", "b")])
    assert np.array_equal(read, embedding)


def test_statistics_and_predictions_match(dataset):
    data, manifest = dataset
    memory, stores = both(data, [e for e in manifest if e["split"] == "train"])
    for a, b in zip(train.feature_statistics(memory), train.feature_statistics(stores)):
        assert torch.equal(a, b)
    torch.manual_seed(0)
    model = train.build_model({"type": "jca", "dim": 16, "hidden": 8, "dropout": 0.5}, 16, DIM_VISUAL, DIM_AUDIO)
    pred = predict_split(model, memory, 16, 8)
    assert np.array_equal(pred, predict_split(model, stores, 16, 8))


def test_statistics_over_a_bounded_sample_of_rows(dataset, monkeypatch):
    data, manifest = dataset
    memory, stores = both(data, manifest)
    monkeypatch.setattr(train, "STATISTICS_BYTES", 4 * DIM_VISUAL * 100)   # 100 visual rows, 150 audio rows
    sampled = train.feature_statistics(stores)
    assert all(torch.equal(a, b) for a, b in zip(sampled, train.feature_statistics(memory)))
    exact = memory.visual[memory.visual_valid]
    assert not torch.equal(sampled[0], exact.mean(0))   # a sample, but a representative one
    assert torch.allclose(sampled[0], exact.mean(0), atol=0.1)


def test_training_and_evaluation_identical_in_memory_and_out_of_core(tmp_path_factory):
    """Same losses, byte-identical checkpoints on the CPU, and identical reports, either way."""
    runs = {}
    for data in ("memory", "stores"):
        root = str(tmp_path_factory.mktemp(data))
        make_dataset(root)
        with project_root(root):
            summary, = train.run({**FUSION, "type": "jca", "dropout": 0.5}, {**TRAIN, "epochs": 3, "data": data})
            metrics = evaluate.run({"clip": True, "smooth_valence": 0, "smooth_arousal": 0, "plot_videos": 1,
                                    "device": "cpu", "data": data})
        losses = open(os.path.join(root, "reports/train/plots/metrics/fold-0/train/loss.tsv")).read()
        predictions = {os.path.relpath(p, root): open(p).read()
                       for p in sorted(glob.glob(os.path.join(root, "data/predictions/*/*.txt")))}
        model = open(os.path.join(root, "models/fold-0/model.pt"), "rb").read()
        runs[data] = ({k: v for k, v in summary.items() if k != "seconds"}, metrics, losses, predictions, model)
    assert len(runs["memory"][3]) == 8
    for a, b in zip(runs["memory"], runs["stores"]):
        assert a == b


def test_auto_choice_by_budget_and_forced_choice(dataset, monkeypatch):
    data, manifest = dataset
    dirs = os.path.join(data, "features/facenet"), os.path.join(data, "features/openl3")
    size = feature_bytes(manifest, *dirs)
    rows = sum(int(e["frames"]) for e in manifest)   # the stores hold `frames` rows a video
    assert size == 4 * rows * (DIM_VISUAL + DIM_AUDIO)
    gb = size / 2**30
    assert choose_data({"memory_budget_gb": gb}, manifest, *dirs) == "memory"
    assert choose_data({"memory_budget_gb": gb * 0.99}, manifest, *dirs) == "stores"
    assert choose_data({"data": "auto"}, manifest, *dirs) == "memory"   # default budget: 2 GB
    monkeypatch.setattr(outofcore, "MEMORY_BUDGET_GB", gb / 2)
    assert choose_data({}, manifest, *dirs) == "stores"
    assert choose_data({"data": "memory"}, manifest, *dirs) == "memory"
    monkeypatch.undo()
    assert choose_data({"data": "stores", "memory_budget_gb": 100}, manifest, *dirs) == "stores"
    with pytest.raises(ParamsError, match="data must be one of auto, memory, stores"):
        choose_data({"data": "disk"}, manifest, *dirs)


def test_stages_take_the_path_the_params_choose(tmp_path, monkeypatch):
    """`train.data` / `eval.data` reach the split constructor; `auto` picks by `memory_budget_gb`."""
    make_dataset(str(tmp_path))
    taken = []
    real = outofcore.open_split

    def spy(entries, visual_dir, audio_dir, device, data):
        split = real(entries, visual_dir, audio_dir, device, data)
        taken.append(type(split).__name__)
        return split

    monkeypatch.setattr(train, "open_split", spy)
    monkeypatch.setattr(evaluate, "open_split", spy)
    params = {**TRAIN, "epochs": 1}
    monkeypatch.chdir(tmp_path)                    # the project is the working directory, as under dvc
    train.run(FUSION, {**params, "data": "stores"})
    train.run(FUSION, {**params, "memory_budget_gb": 1e-9})
    train.run(FUSION, params)
    assert taken == ["StoreSplit"] * 4 + ["Split"] * 2
    taken.clear()
    evaluation = {"clip": True, "smooth_valence": 0, "smooth_arousal": 0, "plot_videos": 1, "device": "cpu"}
    evaluate.run({**evaluation, "data": "stores"})
    evaluate.run({**evaluation, "data": "memory", "memory_budget_gb": 1e-9})
    assert taken == ["StoreSplit"] * 3 + ["Split"] * 3   # train, validation and test splits


def test_params_yaml_defaults_are_valid():
    params = yaml.safe_load(open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "params.yaml")))
    for section in ("train", "eval"):
        assert params[section]["data"] in outofcore.DATA_CHOICES
        assert params[section]["memory_budget_gb"] > 0
