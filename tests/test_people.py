"""Every person in the frame, wired: `visual.people: all` stores, Aff-Wild2 `_left` / `_right` trials from
one decode, `avfusion predict --people all` and `--video-out`, on real encoded videos of drawn faces
(tests/test_tracks.py's scene: two faces that cross, one vanishing for 5 frames)."""
from __future__ import annotations

import av
import numpy as np
import pytest
from test_predict import make_video, project, read_rows  # noqa: F401  (`project`: the fixture)
from test_tracks import drawn_person, render, scene

from avfusion.app.cli import main
from avfusion.app.predict import COLUMNS, PEOPLE_COLUMNS
from avfusion.faces.embedder import FaceTrackEmbedder
from avfusion.store.reader import FeatureReader

from conftest import encode_video, extract, make_project, tone

FPS = 10
SCALE = 2          # videos drawn at twice the scene's size: detection runs on a downscaled copy (640 px)


def side_by_side(frames: int = 8) -> list[list[tuple[float, float]]]:
    """Two faces that stay on their sides, drifting towards each other."""
    return [[(100 + 4 * f, 110), (380 - 4 * f, 130)] for f in range(frames)]


def draw(centres) -> list:
    return [image.resize((image.width * SCALE, image.height * SCALE)) for image in map(render, centres)]


@pytest.fixture(scope="module")
def crossing(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("people") / "crossing.mp4"
    return encode_video(path, draw(scene()), tone(len(scene()) / FPS), FPS)


def decoded_frames(path: str) -> tuple[int, int]:
    """(video frames, audio frames) decoded from a file."""
    with av.open(path) as container:
        video = sum(1 for _ in container.decode(video=0))
    with av.open(path) as container:
        audio = sum(1 for _ in container.decode(audio=0)) if container.streams.audio else 0
    return video, audio


@pytest.mark.slow
def test_predict_people_all_csv_plot_and_overlay(project, crossing, tmp_path):   # noqa: F811
    out, png, mp4 = tmp_path / "people.csv", tmp_path / "people.png", tmp_path / "overlay.mp4"
    assert main(["predict", crossing, "--people", "all", "--out", str(out), "--plot", str(png),
                 "--video-out", str(mp4), "--model", str(project / "models"), "--device", "cpu"]) == 0
    header, rows = read_rows(out)
    assert header == PEOPLE_COLUMNS
    ids_of: dict[int, set[int]] = {0: set(), 1: set()}
    by_frame: dict[int, list[int]] = {}
    for row in rows:
        frame, person = int(row[0]), int(row[2])
        assert abs(float(row[1]) - frame / FPS) < 1e-3
        assert all(abs(float(v)) <= 1 for v in row[3:5]) and row[5] == "1" and row[6] == "1"
        x, y, w, h = (float(v) for v in row[7:11])
        # the box in pixels of the original (twice the scene's size) frame: on a drawn face's centre
        who = drawn_person(np.array([x, y, x + w, y + h]) / SCALE, scene()[frame])
        assert who is not None and 40 < w < 240, row
        ids_of[who].add(person)
        by_frame.setdefault(frame, []).append(person)
    assert all(len(set(ids)) == len(ids) for ids in by_frame.values())     # never one id for two faces
    assert ids_of[0] and ids_of[1] and len(ids_of[0]) == len(ids_of[1]) == 1 and ids_of[0] != ids_of[1]
    b = ids_of[1].pop()
    assert not any(b in by_frame.get(f, []) for f in range(22, 27))        # B's gap: no row
    assert any(b in by_frame.get(f, []) for f in range(27, 30))            # back under the same id
    assert png.read_bytes()[:4] == b"\x89PNG"
    # the overlay: decodable, every frame, the audio kept
    video_frames, audio_frames = decoded_frames(str(mp4))
    assert video_frames == len(scene()) and audio_frames == decoded_frames(crossing)[1] > 0
    with av.open(str(mp4)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    with av.open(crossing) as container:
        plain = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert first.shape == plain.shape and np.abs(first.astype(int) - plain).max() > 100   # boxes drawn


@pytest.mark.slow
def test_one_person_output_unchanged_and_video_out(project, tmp_path):   # noqa: F811
    video = make_video(tmp_path / "clip.mp4", face=True, sound=True)
    plain, with_video, mp4 = tmp_path / "plain.csv", tmp_path / "with.csv", tmp_path / "overlay.mp4"
    common = ["--model", str(project / "models"), "--device", "cpu"]
    assert main(["predict", video, "--out", str(plain), *common]) == 0
    assert main(["predict", video, "--out", str(with_video), "--video-out", str(mp4), *common]) == 0
    assert plain.read_bytes() == with_video.read_bytes() and read_rows(plain)[0] == COLUMNS
    assert decoded_frames(str(mp4)) == decoded_frames(video)


def run_visual(root, paths: dict, trials: list[dict], people: str, monkeypatch,
               on_error: str = "fail") -> tuple[FeatureReader, list[str]]:
    """The facenet stage in `root` on these trials; returns its stores and the files decoded. The
    broken file gets frame times, as if it broke after the dataset stage read it."""
    params = {"facenet": {"weights": "random", "seed": 0, "detect_size": 640, "min_face": 20, "margin": 20,
                          "detect_every": 1, "people": people, "batch_size": 8, "keep_pooled": False,
                          "device": "cpu", "stores": 1, "workers": 1, "on_error": on_error}}
    make_project(root, params, [{**{k: v for k, v in t.items() if k != "file"}, "path": paths[t["file"]],
                                 **({"times": np.arange(3) / FPS} if t["file"] == "broken" else {})} for t in trials])
    decoded, frames = [], FaceTrackEmbedder._frames

    def counting(self, path):
        decoded.append(path)
        return frames(self, path)
    monkeypatch.setattr(FaceTrackEmbedder, "_frames", counting)
    reader = extract(root, "facenet", monkeypatch)
    monkeypatch.undo()
    return reader, decoded


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, str]:
    media = tmp_path_factory.mktemp("media")
    (media / "broken.mp4").write_bytes(b"not a video")
    return {"broken": str(media / "broken.mp4"),
            "two": encode_video(media / "two.mp4", draw(side_by_side()), fps=FPS),
            "crossing": encode_video(media / "crossing.mp4", draw(scene()[:12]), fps=FPS)}


def box_centre_x(rows) -> np.ndarray:
    box = rows["box"][rows["valid"]]
    return (box[:, 0] + box[:, 2]) / 2 / SCALE


@pytest.mark.slow
@pytest.mark.parametrize("people", ["one", "all"])
def test_left_and_right_trials_share_one_decode(tmp_path, videos, monkeypatch, people):
    reader, decoded = run_visual(tmp_path, videos, [{"video_id": "two_left", "file": "two", "person": "left"},
                                                    {"video_id": "two_right", "file": "two", "person": "right"}],
                                 people, monkeypatch)
    assert decoded == [videos["two"]]                                       # one decode for both trials
    columns = ("valid", "box") + (("person",) if people == "all" else ())
    left, right = (reader.rows(v, columns=columns) for v in ("two_left", "two_right"))
    assert left["valid"].sum() >= 6 and right["valid"].sum() >= 6
    assert np.all(box_centre_x(left) < 240) and np.all(box_centre_x(right) > 240)
    assert ("person" in reader.arrays[0]) == (people == "all")               # `one` keeps its layout
    if people == "all":
        assert len(set(left["person"][left["valid"]])) == len(set(right["person"][right["valid"]])) == 1
        assert set(left["person"][left["valid"]]) != set(right["person"][right["valid"]])


@pytest.mark.slow
def test_people_all_store_holds_everyone_and_one_row_per_frame(tmp_path, videos, monkeypatch):
    reader, _ = run_visual(tmp_path, videos, [{"video_id": "broken", "file": "broken"},
                                              {"video_id": "cross", "file": "crossing"}], "all", monkeypatch, "skip")
    assert reader.length("broken") == 0 and all(len(v) == 0 for v in reader.row_set("broken", "people").values())
    rows = reader.rows("cross", columns=("embedding", "valid", "frame", "person", "box"))
    n = 12
    assert reader.length("cross") == n and rows["frame"].tolist() == list(range(n))   # training's rows
    everyone = reader.row_set("cross", "people")
    assert set(everyone) == {"frame", "person", "box", "landmarks", "prob", "embedding"}
    assert np.all(np.diff(everyone["frame"]) >= 0) and everyone["frame"].max() < n
    ids = set(everyone["person"].tolist())
    assert len(ids) == 2                                                     # A and B, one id each
    for f in range(n):
        here = everyone["person"][everyone["frame"] == f]
        assert len(set(here)) == len(here)
        for person, box in zip(here, everyone["box"][everyone["frame"] == f]):
            assert drawn_person(box / SCALE, scene()[f]) == person             # A is 0, B is 1
    # the trial follows the longest track on screen: its rows are that person's people rows
    counts = np.bincount(everyone["person"])
    longest = int(np.argmax(counts))
    assert counts[longest] > counts[1 - longest]
    mine = everyone["person"] == longest
    assert rows["person"][rows["valid"]].tolist() == [longest] * int(mine.sum())
    assert np.all(rows["person"][~rows["valid"]] == -1)
    np.testing.assert_array_equal(rows["embedding"][everyone["frame"][mine]], everyone["embedding"][mine])
    np.testing.assert_array_equal(rows["box"][everyone["frame"][mine]], everyone["box"][mine])
