"""Feature sets (fusion.visual, fusion.audio): composition, per-extractor statistics, the presence rule,
the missing-store line, params, and predict computing a model's plug-in extractors, on real stores and videos."""
import os

import numpy as np
import pytest
import torch
from test_predict import project  # noqa: F401 (fixture: seeded weights and a model of today's feature set)
from test_train import FUSION, TRAIN
from test_windows import DIM_AUDIO, make_dataset

from avfusion.errors import ParamsError
from avfusion.extraction.registry import get
from avfusion.learning import featuresets, train
from avfusion.learning.featuresets import MissingFeatures, compose, feature_set
from avfusion.learning.outofcore import open_split
from avfusion.learning.windows import load_split
from avfusion.params import validate
from avfusion.sources.manifest import read_manifest
from avfusion.store.layout import bucket_of, store_path
from avfusion.store.reader import FeatureReader
from avfusion.store.writer import StoreWriter

from conftest import project_root

DIM_EXTRA = 5


def add_store(data: str, name: str, seed: int = 1, stores: int = 3, version: int = 1) -> str:
    """A third real store (data/features/<name>) for the dataset's videos: another scale and offset than
    the audio store, and its own invalid stretch, so per-extractor statistics and the AND rule show."""
    rng = np.random.default_rng(seed)
    directory = os.path.join(data, "features", name)
    manifest = read_manifest(os.path.join(data, "manifest.csv"))
    audio = FeatureReader(os.path.join(data, "features", "openl3"))
    for bucket in range(stores):
        plan = [e["video_id"] for e in manifest if bucket_of(e["video_id"], stores) == bucket]
        writer = StoreWriter(store_path(directory, bucket), DIM_EXTRA, {"extractor": f"synthetic-{name}/{version}"}, plan)
        for vid in plan:
            n = audio.length(vid)
            valid = np.ones(n, bool)
            valid[: n // 4] = False
            embedding = (50 + 10 * rng.standard_normal((n, DIM_EXTRA))).astype(np.float32) * valid[:, None]
            writer.append(vid, embedding=embedding, valid=valid, frame=np.arange(n), time=np.arange(n) / 15)
    return directory


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    data = make_dataset(str(tmp_path_factory.mktemp("featuresets")))
    add_store(data, "mfcc")
    return data, read_manifest(os.path.join(data, "manifest.csv"))


def dirs(data, *names):
    return [os.path.join(data, "features", name) for name in names]


def test_compose_joins_blocks_and_needs_every_extractor():
    a, b = np.ones((4, 2), np.float32), np.full((4, 3), 2, np.float32)
    embedding, present, each = compose([(a, np.array([1, 1, 0, 0], bool)), (b, np.array([1, 0, 1, 0], bool))])
    assert embedding.shape == (4, 5) and (embedding[:, :2] == 1).all() and (embedding[:, 2:] == 2).all()
    assert present.tolist() == [True, False, False, False] and each.shape == (4, 2)
    single, present, _ = compose([(a, np.ones(4, bool))])
    assert single is a and present.all()   # one extractor: its rows as they are (today's models)


def test_a_modality_is_its_stores_side_by_side_present_where_all_are_valid(dataset):
    data, manifest = dataset
    entries = [e for e in manifest if e["split"] == "train"]
    plain = load_split(entries, *dirs(data, "facenet", "openl3"))
    joined = load_split(entries, dirs(data, "facenet"), dirs(data, "openl3", "mfcc"))
    assert torch.equal(joined.visual, plain.visual) and torch.equal(joined.audio[:, :DIM_AUDIO], plain.audio)
    mfcc = FeatureReader(dirs(data, "mfcc")[0])
    for vid, rows in joined.video_slices().items():
        stored = mfcc.rows(vid, columns=("embedding", "valid"))
        n = min(len(stored["valid"]), rows.stop - rows.start)
        assert np.array_equal(joined.audio[rows][:n, DIM_AUDIO:].numpy(), stored["embedding"][:n])
        assert np.array_equal(joined.audio_valid[rows][:n].numpy(),
                              plain.audio_valid[rows][:n].numpy() & stored["valid"][:n])
    assert joined.audio_valid.sum() < plain.audio_valid.sum()


def test_each_extractor_is_standardised_on_its_own_valid_training_rows(dataset):
    data, manifest = dataset
    entries = [e for e in manifest if e["split"] == "train"]
    memory = load_split(entries, dirs(data, "facenet"), dirs(data, "openl3", "mfcc"))
    stats = train.feature_statistics(memory)
    # expected: each store's own valid rows (not only those where both are valid), computed apart
    for (lo, hi), (_, valid) in zip(((0, DIM_AUDIO), (DIM_AUDIO, DIM_AUDIO + DIM_EXTRA)), memory.audio_parts):
        rows = memory.audio[valid.numpy()][:, lo:hi].double().numpy()
        assert np.allclose(stats[2][lo:hi].numpy(), rows.mean(0), atol=1e-4)
        assert np.allclose(stats[3][lo:hi].numpy(), rows.std(0), atol=1e-4)
    assert stats[2][DIM_AUDIO:].min() > 40                                # mfcc's own scale: not zero-diluted
    # the audio block's statistics do not depend on mfcc beside it; one extractor gives today's statistics
    plain = train.feature_statistics(load_split(entries, *dirs(data, "facenet", "openl3")))
    assert all(torch.equal(a, b) for a, b in zip(plain[:2], stats[:2]))
    assert torch.allclose(plain[2], stats[2][:DIM_AUDIO]) and torch.allclose(plain[3], stats[3][:DIM_AUDIO])
    # out of core: the same statistics and the same batches
    stores = open_split(entries, dirs(data, "facenet"), dirs(data, "openl3", "mfcc"), "cpu", "stores")
    assert all(torch.equal(a, b) for a, b in zip(stats, train.feature_statistics(stores)))
    windows = memory.windows(16, 8)
    a, b = memory.gather(windows[:9], 16), stores.gather(windows[:9], 16)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_training_records_the_feature_set_and_evaluation_reads_it(dataset, tmp_path):
    import shutil

    from avfusion.learning import evaluate
    data, _ = dataset
    root = str(tmp_path)
    shutil.copytree(os.path.dirname(data), root, dirs_exist_ok=True)
    fusion = {**FUSION, "visual": ["facenet"], "audio": ["openl3", "mfcc"]}
    with project_root(root):
        summary, = train.run(fusion, {**TRAIN, "epochs": 2})
    model, config = train.load_model(os.path.join(root, "models/fold-0"))
    assert feature_set(config["fusion"]) == {"visual": ["facenet"], "audio": ["openl3", "mfcc"]}
    assert config["dim_audio"] == DIM_AUDIO + DIM_EXTRA and set(config["provenance"]) == {"facenet", "openl3", "mfcc"}
    assert model.audio_mean[DIM_AUDIO:].min() > 40                     # the statistics travel with the model
    with project_root(root):
        metrics = evaluate.run({"clip": True, "smooth_valence": 0, "smooth_arousal": 0, "plot_videos": 1})
    assert metrics["test"]["videos"] == 2


def test_the_featureset_file_fingerprints_exactly_the_stores_the_models_read(dataset, tmp_path):
    """data/featureset.json (stage featureset), what train and evaluate depend on: unchanged when a store
    the models do not read arrives, changed when the feature set or one of its stores changes."""
    import json
    import shutil
    data, _ = dataset
    root = str(tmp_path / "repo")
    shutil.copytree(os.path.dirname(data), root)
    out = os.path.join(root, "data", "featureset.json")

    def written(fusion: dict) -> str:
        with project_root(root):
            featuresets.write_description(fusion)
        return open(out).read()

    fusion = {**FUSION, "visual": ["facenet"], "audio": ["openl3", "mfcc"]}
    before = written(fusion)
    assert [s["store"] for s in json.loads(before)["audio"]] == ["data/features/openl3", "data/features/mfcc"]
    assert [s["weights"] for s in json.loads(before)["audio"]] == [None, None]     # no records: synthetic stores
    add_store(os.path.join(root, "data"), "logmel")                    # an extractor the models do not read
    assert written(fusion) == before
    assert written({**fusion, "audio": ["openl3", "logmel"]}) != before
    shutil.rmtree(os.path.join(root, "data", "features", "mfcc"))     # mfcc re-extracted by a new version
    add_store(os.path.join(root, "data"), "mfcc", version=2)
    assert written(fusion) != before
    with pytest.raises(MissingFeatures, match="fusion.audio needs egemaps"), project_root(root):
        featuresets.write_description({**fusion, "audio": ["egemaps"]})
    assert json.loads(open(out).read())["audio"][1]["extractor"] == "mfcc"   # the last good file stays


def test_a_store_not_extracted_is_one_line_before_any_training(dataset, tmp_path):
    import shutil
    data, _ = dataset
    root = str(tmp_path)
    shutil.copytree(os.path.dirname(data), root, dirs_exist_ok=True)
    with pytest.raises(MissingFeatures) as error:
        with project_root(root):
            train.run({**FUSION, "audio": ["openl3", "egemaps"]}, TRAIN)
    message = str(error.value)
    assert "\n" not in message and "fusion.audio needs egemaps" in message and "features.extractors" in message
    assert not os.path.exists(os.path.join(root, "models")) and not os.path.exists(os.path.join(root, "reports"))


@pytest.mark.parametrize("value", [[], ["nope"], ["openl3", "openl3"], "openl3", [1]])
def test_params_refuse_a_bad_feature_set_in_one_line_naming_the_key(value):
    with pytest.raises(ParamsError, match=r"^params.yaml: fusion.audio must be a non-empty list of distinct "
                                          r"extractor names \(clip, egemaps, emotieff, expression, facenet, "):
        validate("fusion", {"type": "jca", "audio": value})


def test_params_default_to_todays_feature_set():
    fusion = validate("fusion", {"type": "jca"})
    assert feature_set(fusion) == {"visual": ["facenet"], "audio": ["openl3"]}


def model_with_audio(project, root, audio: list[str], extra: dict) -> str:
    """A copy of test_predict's project whose model reads `audio` (openl3 and plug-ins): the plug-ins'
    provenance as their stores would record it, and the model sized for the joined columns."""
    import json
    import shutil

    from avfusion.learning.fusion import build_model
    from avfusion.learning.train import save_fold
    shutil.copytree(project, root)
    fold = os.path.join(root, "models", "fold-0")
    config = json.load(open(os.path.join(fold, "config.json")))
    config["fusion"]["audio"] = audio
    config["provenance"].update(extra)
    config["dim_audio"] = 512 + sum(get(name)(get(name).settings(extra[name]), "cpu").dim for name in extra)
    model = build_model(config["fusion"], config["window"], config["dim_visual"], config["dim_audio"])
    save_fold(fold, model.state_dict(), config)
    return fold


@pytest.mark.slow
def test_predict_computes_the_plugin_extractors_of_the_models_feature_set(project, tmp_path, capsys):
    from test_predict import FRAMES, make_video

    from avfusion.app.cli import main
    from avfusion.app.predict import Predictor
    from avfusion.extraction.base import Video
    from avfusion.extractors.mfcc import MfccExtractor
    mfcc = {"extractor": MfccExtractor.version, "params": {}, "precision": "float32"}
    fold = model_with_audio(project, str(tmp_path / "p"), ["openl3", "mfcc"], {"mfcc": mfcc})
    video = make_video(tmp_path / "clip.mp4", True, True)
    predictor = Predictor(fold, device="cpu")
    result = predictor.predict(str(video))
    assert result["pred"].shape == (FRAMES, 2) and np.isfinite(result["pred"]).all()
    # the audio modality is present where openl3 and mfcc both are, as in training
    clip = Video(id="clip", path=str(video), times=result["time"])
    openl3_valid = predictor.extractors["openl3"].rows(clip)["valid"]
    mfcc_valid = MfccExtractor({}, "cpu").rows(clip)["valid"]
    assert np.array_equal(result["audio"], openl3_valid & mfcc_valid) and result["audio"].any()

    # a store written by another version of an extractor: one line, no output
    stale = model_with_audio(project, str(tmp_path / "q"), ["openl3", "mfcc"],
                             {"mfcc": {**mfcc, "extractor": "mfcc-torch/0"}})
    out = tmp_path / "pred.csv"
    assert main(["predict", str(video), "--out", str(out), "--model", stale, "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert "trained on mfcc features of extractor 'mfcc-torch/0'" in err and "\n" not in err and not out.exists()


@pytest.mark.slow
def test_feature_set_experiments_run_only_train_and_evaluate(pipeline_repo):
    import csv
    import io
    import json

    from conftest import dvc, stages_run
    repo = pipeline_repo
    dvc("repro", cwd=repo)
    failed = dvc("exp", "run", "-S", "fusion.audio=[mfcc]", cwd=repo, check=False)   # never extracted
    assert failed.returncode != 0 and "fusion.audio needs mfcc features" in failed.stdout + failed.stderr
    added = dvc("exp", "run", "-S", "features.extractors=[vad,mfcc]", "-S", "fusion.audio=[openl3]", cwd=repo)
    # a new store the model does not read: its extraction, and the fingerprint stage, whose output stays
    assert stages_run(added.stdout) == {"extract@mfcc", "featureset"}, added.stdout
    exp = dvc("exp", "run", "-S", "fusion.audio=[openl3,mfcc]", cwd=repo)
    assert stages_run(exp.stdout) == {"featureset", "train", "evaluate"}, exp.stdout
    config = json.load(open(os.path.join(repo, "models", "fold-0", "config.json")))
    assert config["fusion"]["audio"] == ["openl3", "mfcc"] and config["dim_audio"] == 512 + 20
    table = list(csv.DictReader(io.StringIO(dvc("exp", "show", "--csv", cwd=repo).stdout)))
    assert any("mfcc" in row["fusion.audio"] and row["test.ccc_mean"] for row in table)
