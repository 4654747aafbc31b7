"""Weight files: seeded random, local copies, refused pickles, pinned downloads from a real HTTP server
on 127.0.0.1 (a mismatch or a failure is one line and caches nothing), and reuse of made files."""
import functools
import hashlib
import http.server
import json
import os
import pickle
import threading

import pytest
import torch

from avfusion.errors import ParamsError, WeightsError
from avfusion.extraction.registry import get, names
from avfusion.extraction.weights import Download, check_state_dict, fetch, materialise
from avfusion.params import allowed, load_params
from avfusion.paths import ROOT_ENV

from conftest import REPO


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/avfusion-pwned",))


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text("{}\n")
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    return tmp_path


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/served/."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def facenet_params(**changes) -> dict:
    return {**load_params("facenet", os.path.join(REPO, "params.yaml")), **changes}


def test_pinned_download_is_checked_and_kept(server, tmp_path):
    served, url = server
    (served / "w.bin").write_bytes(b"weights" * 1000)
    good = hashlib.sha256(b"weights" * 1000).hexdigest()
    dest = tmp_path / "cache" / "w.bin"
    dest.parent.mkdir()
    fetch(Download(f"{url}/w.bin", good), str(dest), "x.weights")
    assert dest.read_bytes() == b"weights" * 1000


def test_mismatched_download_is_one_line_and_caches_nothing(server, tmp_path):
    served, url = server
    (served / "w.bin").write_bytes(b"tampered")
    found, pinned = hashlib.sha256(b"tampered").hexdigest(), "0" * 64
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(WeightsError) as err:
        fetch(Download(f"{url}/w.bin", pinned), str(cache / "w.bin"), "x.weights")
    assert str(err.value) == f"{url}/w.bin: SHA-256 {found}, expected {pinned} (x.weights); not cached"
    assert os.listdir(cache) == []


def test_failed_download_names_the_file_and_the_ways_out(tmp_path):
    dest = tmp_path / "w.pt"
    with pytest.raises(WeightsError) as err:
        fetch(Download("http://127.0.0.1:9/20180402-114759-vggface2.pt", "a" * 64), str(dest), "facenet.weights")
    message = str(err.value)
    assert "\n" not in message and "20180402-114759-vggface2.pt" in message
    assert "dvc pull" in message and "facenet.weights" in message and "reachable" in message
    assert os.listdir(tmp_path) == []


def test_an_unpinned_file_is_not_downloaded(tmp_path):
    with pytest.raises(WeightsError, match="no SHA-256 is pinned"):
        fetch(Download("http://127.0.0.1:9/x.pt", ""), str(tmp_path / "x.pt"), "x.weights")


def test_malicious_pickle_is_refused_and_not_executed(project, tmp_path):
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"w": Exploit()}, f)
    if os.path.exists("/tmp/avfusion-pwned"):
        os.remove("/tmp/avfusion-pwned")
    with pytest.raises(WeightsError, match="refused"):
        materialise(get("facenet"), facenet_params(weights=str(evil)))
    assert not os.path.exists("/tmp/avfusion-pwned")


def test_local_state_dict_is_copied_and_recorded(project, tmp_path):
    src = tmp_path / "mine.pt"
    torch.save({"conv.weight": torch.ones(2, 2)}, src)
    record = materialise(get("facenet"), facenet_params(weights=str(src)))
    copied = project / "data" / "weights" / "facenet" / "inception_resnet_v1.pt"
    assert torch.equal(torch.load(copied, weights_only=True)["conv.weight"], torch.ones(2, 2))
    assert record == json.loads((project / "data" / "weights" / "facenet" / "weights.json").read_text())
    assert record["files"] == {"inception_resnet_v1.pt": hashlib.sha256(copied.read_bytes()).hexdigest()}


def test_unknown_spec_is_an_error(project):
    with pytest.raises(ParamsError, match=r"^params.yaml: facenet.weights must be random, vggface2, casia-webface "
                                          r"or the path of an existing file, not 'imagenet'$"):
        materialise(get("facenet"), facenet_params(weights="imagenet"))


def test_non_tensor_state_is_refused(tmp_path):
    torch.save({"epoch": 3}, tmp_path / "x.pt")
    with pytest.raises(WeightsError, match="dict of tensors"):
        check_state_dict(str(tmp_path / "x.pt"))


def test_random_weights_are_seeded_made_once_and_remade_for_another_spec(project, monkeypatch):
    facenet = get("facenet")
    first = materialise(facenet, facenet_params(seed=3))
    calls = []
    monkeypatch.setattr(facenet, "make_weights", classmethod(lambda cls, p, d: calls.append(p)))
    assert materialise(facenet, facenet_params(seed=3)) == first and calls == []     # reused as they are
    monkeypatch.undo()
    monkeypatch.setenv(ROOT_ENV, str(project))
    other = materialise(facenet, facenet_params(seed=4))
    assert other["files"] != first["files"] and other["spec"]["seed"] == 4
    again = materialise(facenet, facenet_params(seed=3))
    assert again["files"] == first["files"]                                            # seeded: the same bytes


def test_a_tampered_file_is_made_again(project):
    facenet = get("facenet")
    first = materialise(facenet, facenet_params())
    path = project / "data" / "weights" / "facenet" / "inception_resnet_v1.pt"
    path.write_bytes(b"not weights")
    assert materialise(facenet, facenet_params()) == first
    assert hashlib.sha256(path.read_bytes()).hexdigest() == first["files"]["inception_resnet_v1.pt"]


@pytest.mark.parametrize("name", names())
def test_named_weights_are_the_ones_the_params_schema_lists(name):
    cls = get(name)
    if "weights" in cls.Params.model_fields:
        assert allowed(name, "weights") == f"{', '.join(cls.weight_names)} or the path of an existing file"
    else:
        assert cls.weight_names == () and cls.weight_files(load_params(name, os.path.join(REPO, "params.yaml"))) == []
