"""The weights stage: seeded random, local copies, refused pickles, and a loud failed download."""
import os
import pickle

import pytest
import torch

from avfusion.errors import ParamsError
from avfusion.params import SCHEMA
from avfusion.weights import (AUDIO_NAMED, VISUAL_NAMED, WeightsError, check_state_dict, download, make_audio,
                              make_visual)


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/avfusion-pwned",))


def test_failed_download_names_the_file_and_the_ways_out(tmp_path):
    dest = str(tmp_path / "visual.pt")
    with pytest.raises(WeightsError) as err:
        download("http://127.0.0.1:9/20180402-114759-vggface2.pt", dest, "visual.weights")
    message = str(err.value)
    assert "20180402-114759-vggface2.pt" in message
    assert "dvc pull" in message and "local path" in message and "reachable" in message
    assert not os.path.exists(dest) and not os.path.exists(dest + ".download")


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"w": Exploit()}, f)
    if os.path.exists("/tmp/avfusion-pwned"):
        os.remove("/tmp/avfusion-pwned")
    with pytest.raises(WeightsError, match="refused"):
        make_visual(str(evil), 0, str(tmp_path / "visual.pt"))
    assert not os.path.exists("/tmp/avfusion-pwned")


def test_local_state_dict_is_copied(tmp_path):
    src = tmp_path / "mine.pt"
    torch.save({"conv.weight": torch.ones(2, 2)}, src)
    make_visual(str(src), 0, str(tmp_path / "visual.pt"))
    assert torch.equal(torch.load(tmp_path / "visual.pt", weights_only=True)["conv.weight"], torch.ones(2, 2))


def test_unknown_spec_is_an_error(tmp_path):
    with pytest.raises(ParamsError, match=r"^params.yaml: visual.weights must be random, vggface2, casia-webface "
                                          r"or the path of an existing file, not 'imagenet'$"):
        make_visual("imagenet", 0, str(tmp_path / "v.pt"))
    with pytest.raises(ParamsError, match=r"audio.weights must be random, env, music or the path of an existing "
                                          r"file, not 'speech'$"):
        make_audio("speech", 0, "mel128", 512, str(tmp_path / "a.h5"))


def test_non_tensor_state_is_refused(tmp_path):
    torch.save({"epoch": 3}, tmp_path / "x.pt")
    with pytest.raises(WeightsError, match="dict of tensors"):
        check_state_dict(str(tmp_path / "x.pt"))


def test_random_weights_are_seeded(tmp_path):
    make_visual("random", 3, str(tmp_path / "a.pt"))
    make_visual("random", 3, str(tmp_path / "b.pt"))
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    make_audio("random", 3, "mel128", 512, str(tmp_path / "a.h5"))
    make_audio("random", 3, "mel128", 512, str(tmp_path / "b.h5"))
    import h5py
    import numpy as np
    with h5py.File(tmp_path / "a.h5") as fa, h5py.File(tmp_path / "b.h5") as fb:
        names = [n.decode() if isinstance(n, bytes) else n for n in fa.attrs["layer_names"]]
        assert names
        assert all(np.array_equal(fa[names[i]][w][()], fb[names[i]][w][()])
                   for i in range(len(names)) for w in fa[names[i]].attrs["weight_names"])


def test_named_weights_are_the_ones_the_params_schema_lists():
    for section, named in (("visual", VISUAL_NAMED), ("audio", AUDIO_NAMED)):
        assert SCHEMA[section]["weights"].allowed == f"{', '.join(named)} or the path of an existing file"
