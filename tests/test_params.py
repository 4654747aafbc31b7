"""params.yaml against the one schema: the real file validates, bad values fail with one line naming the
key, and a stage stops on a bad value before any work (a real subprocess in a directory with no data)."""
import os
import re
import subprocess
import sys

import pytest
import yaml

from avfusion.errors import DeviceError, ParamsError, UserError
from avfusion.extraction.registry import names
from avfusion.learning import fusion
from avfusion.openl3.frontend import FRONT_ENDS
from avfusion.openl3.network import FINAL_POOL
from avfusion.params import SECTIONS, allowed, load_params, resolve_device, validate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARAMS = os.path.join(REPO, "params.yaml")


def real_params() -> dict:
    with open(PARAMS) as f:
        return yaml.safe_load(f)


def test_every_section_of_the_real_params_validates_unchanged():
    """One section per pipeline model and per registered extractor, and nothing else; every key known,
    none filled in."""
    params = real_params()
    assert set(params) == set(SECTIONS) | set(names())
    for section in params:
        assert load_params(section, PARAMS) == params[section]


def test_allowed_values_are_the_librarys():
    assert allowed("fusion", "type") == "one of " + ", ".join(fusion.TYPES)
    assert allowed("openl3", "input_repr") == "one of " + ", ".join(FRONT_ENDS)
    sizes = {size for pools in FINAL_POOL.values() for size in pools}
    assert allowed("openl3", "embedding_size") == "one of " + ", ".join(map(str, sorted(sizes)))


BAD = [   # section, key, value, the message after "params.yaml: "
    ("demo", "videos", 4, "demo.videos must be an integer >= 5, not 4"),
    ("demo", "size", 161, "demo.size must be an even integer >= 32, not 161"),
    ("demo", "seconds", "8s", "demo.seconds must be a number >= 2, not '8s'"),
    ("data", "source", "youtube", "data.source must be one of demo, affwild2, folder, not 'youtube'"),
    ("data", "root", "", "data.root must be a non-empty string, not ''"),
    ("data", "on_error", "ignore", "data.on_error must be one of fail, skip, not 'ignore'"),
    ("data", "test", 1.5, "data.test must be a number >= 0 and < 1, not 1.5"),
    ("facenet", "keep_pooled", "yes please", "facenet.keep_pooled must be true or false, not 'yes please'"),
    ("facenet", "device", "gpu", "facenet.device must be auto, cpu, cuda or cuda:<index>, not 'gpu'"),
    ("facenet", "stores", 0, "facenet.stores must be an integer >= 1, not 0"),
    ("facenet", "margin", 2.5, "facenet.margin must be an integer >= 0, not 2.5"),
    ("facenet", "weights", None, "facenet.weights must be random, vggface2, casia-webface or the path of an "
                                 "existing file, not None"),
    ("openl3", "input_repr", "mel64", "openl3.input_repr must be one of linear, mel128, mel256, not 'mel64'"),
    ("openl3", "embedding_size", "512", "openl3.embedding_size must be one of 512, 6144, not '512'"),
    ("openl3", "embedding_size", 1024, "openl3.embedding_size must be one of 512, 6144, not 1024"),
    ("openl3", "silence_db", 3, "openl3.silence_db must be a number <= 0, not 3"),
    ("openl3", "rate", -1, "openl3.rate must be a number >= 0, not -1"),
    ("vad", "workers", 0, "vad.workers must be an integer >= 1, not 0"),
    ("features", "extractors", ["vad", "vda"], "features.extractors must be a list of distinct extractor names "
                                               f"({', '.join(names())}), not ['vad', 'vda']"),
    ("fusion", "type", "foo", "fusion.type must be one of jca, lfan, cross_attention, concat, late, "
                              "audio_only, visual_only, ridge, not 'foo'"),
    ("fusion", "dropout", 1.0, "fusion.dropout must be a number >= 0 and < 1, not 1.0"),
    ("fusion", "dim", True, "fusion.dim must be an integer >= 1, not True"),        # YAML true is not 1
    ("train", "window", 0, "train.window must be an integer >= 1, not 0"),
    ("train", "epochs", "abc", "train.epochs must be an integer >= 1, not 'abc'"),
    ("train", "lr", "1e-3", "train.lr must be a number > 0, not '1e-3'"),           # YAML 1.1: a string
    ("train", "lr", float("nan"), "train.lr must be a number > 0, not nan"),
    ("train", "scheduler", "linear", "train.scheduler must be one of cosine, constant, step, plateau, not 'linear'"),
    ("train", "seeds", [], "train.seeds must be a non-empty list of distinct integers >= 0, not []"),
    ("train", "seeds", [0, 0], "train.seeds must be a non-empty list of distinct integers >= 0, not [0, 0]"),
    ("train", "seeds", 0, "train.seeds must be a non-empty list of distinct integers >= 0, not 0"),
    ("train", "threads", -1, "train.threads must be an integer >= 0, not -1"),
    ("eval", "bootstrap", 1.5, "eval.bootstrap must be an integer >= 0, not 1.5"),
    ("eval", "clip", 1, "eval.clip must be true or false, not 1"),
    ("eval", "smooth_valence", -3, "eval.smooth_valence must be an integer >= 0, not -3"),
]


@pytest.mark.parametrize("section,key,value,message", BAD, ids=[f"{s}.{k}={v!r}" for s, k, v, _ in BAD])
def test_bad_value_is_one_line_naming_the_key(section, key, value, message):
    values = {**real_params()[section], key: value}
    with pytest.raises(ParamsError) as err:
        validate(section, values)
    assert str(err.value) == "params.yaml: " + message


@pytest.mark.parametrize("section,changes,message", [
    ("train", {"window": 64, "hop": 65}, "train.hop must be <= train.window (windows must cover every frame), not 65 > 64"),
    ("facenet", {"min_face": 700}, "facenet.min_face must be <= facenet.detect_size (faces are looked for in that "
                                   "copy), not 700 > 640"),
    ("data", {"source": "folder", "validation": 0.5, "test": 0.5},
     "data.validation + data.test must be < 1 (the rest is for training), not 0.5 + 0.5"),
])
def test_rules_between_keys(section, changes, message):
    with pytest.raises(ParamsError, match="^params.yaml: " + re.escape(message) + "$"):
        validate(section, {**real_params()[section], **changes})


def test_missing_and_unknown_keys():
    train = real_params()["train"]
    with pytest.raises(ParamsError, match=r"^params.yaml: eval.clip is missing \(true or false\)$"):
        validate("eval", {k: v for k, v in real_params()["eval"].items() if k != "clip"})
    # a key the recipe sets may be absent or null: train.recipe fills it in (avfusion/recipes.py)
    assert validate("train", {k: v for k, v in train.items() if k != "window"})["window"] is None
    with pytest.raises(ParamsError, match=r"^params.yaml: train.windw is not a known key \(known: recipe, seeds, "):
        validate("train", {**train, "windw": 64})
    folder = {"source": "folder", "root": "clips"}
    with pytest.raises(ParamsError, match=r"data.validation is missing \(the folder source splits by it"):
        validate("data", folder)
    # optional keys: the library's defaults are filled in; source-specific ones stay absent
    assert validate("data", {"source": "demo", "root": "data/demo"}) == {
        "source": "demo", "root": "data/demo", "on_error": "fail"}
    partial = {k: v for k, v in real_params()["fusion"].items() if not k.startswith("tcn_")}
    assert validate("fusion", partial) == real_params()["fusion"]


def test_load_params_errors_name_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    with pytest.raises(ParamsError, match=f"^{re.escape(str(path))}: file not found"):
        load_params("train", str(path))
    path.write_text("train:\n  window: [64\n")
    with pytest.raises(ParamsError, match=f"^{re.escape(str(path))}: not valid YAML at line 3") as err:
        load_params("train", str(path))
    assert "\n" not in str(err.value)
    path.write_text(yaml.safe_dump({"fusion": real_params()["fusion"]}))
    with pytest.raises(ParamsError, match=f"^{re.escape(str(path))}: no 'train' section$"):
        load_params("train", str(path))
    path.write_text("train: 3\n")
    with pytest.raises(ParamsError, match="'train' must be a mapping of keys to values, not 3"):
        load_params("train", str(path))


def test_on_error_is_checked_by_the_schema():
    audio = {k: v for k, v in real_params()["openl3"].items() if k != "on_error"}
    assert validate("openl3", audio)["on_error"] == "fail"      # the default
    with pytest.raises(ParamsError, match="openl3.on_error must be one of fail, skip, not 'ignore'"):
        validate("openl3", {**real_params()["openl3"], "on_error": "ignore"})
    assert issubclass(ParamsError, UserError)


def test_device_flag_is_checked():
    import torch
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(DeviceError, match=r"^device must be auto, cpu, cuda or cuda:<index>, not 'gpu'$"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device is available"):
            resolve_device("cuda:0")


@pytest.mark.parametrize("stage,section,key,value,line", [
    ("train", "train", "window", 0, "train: params.yaml: train.window must be an integer >= 1, not 0"),
    ("dataset", "data", "source", "youtube",
     "dataset: params.yaml: data.source must be one of demo, affwild2, folder, not 'youtube'"),
    ("extract facenet", "facenet", "detect_every", 0,
     "facenet: params.yaml: facenet.detect_every must be an integer >= 1, not 0"),
])
def test_stage_stops_on_a_bad_value_before_any_work(tmp_path, stage, section, key, value, line):
    # No data, manifest, features or models exist here: the only possible failure is the param.
    params = real_params()
    params[section][key] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-m", *f"stages.{stage}".split()], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [line], proc.stderr      # one line, no traceback
    assert proc.stdout == "" and sorted(os.listdir(tmp_path)) == ["params.yaml"]   # nothing written
