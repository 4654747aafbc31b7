"""Multi-person tracking: drawn faces that cross paths and vanish, in a real encoded video found by the
project's MTCNN; and the tracker's rules on made-up box sequences."""
from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image, ImageDraw

from avfusion.faces.embedder import FaceDetector
from avfusion.faces.people import PeopleTracker, TrackSummary, appearance, gap_frames, pick_sides, summary
from avfusion.sources.demo import draw_face, write_video

WIDTH, HEIGHT, TILE = 480, 240, 144
BACKGROUND, STRIPE = (40, 60, 80), (60, 80, 100)
LOOKS = [{"background": BACKGROUND, "stripe": STRIPE, "skin": (225, 175, 135), "face_w": 0.5, "face_h": 0.65},
         {"background": BACKGROUND, "stripe": STRIPE, "skin": (150, 100, 70), "face_w": 0.46, "face_h": 0.7}]


def paste_face(canvas: Image.Image, look: dict, centre: tuple[float, float]) -> None:
    """A drawn face without its square background, so the face in front hides only face."""
    tile = draw_face(TILE, look, valence=0.4, eye_open=0.8, center=(TILE / 2, TILE / 2))
    fw, fh = look["face_w"] * TILE, look["face_h"] * TILE
    mask = Image.new("L", (TILE, TILE), 0)
    ImageDraw.Draw(mask).ellipse([TILE / 2 - fw / 2, TILE / 2 - fh / 2, TILE / 2 + fw / 2, TILE / 2 + fh / 2], fill=255)
    canvas.paste(tile, (round(centre[0] - TILE / 2), round(centre[1] - TILE / 2)), mask)


def scene() -> list[list[tuple[float, float] | None]]:
    """Drawn face centres per frame: A walks right in front of B, who walks left, then B steps out of
    view for 5 frames (0.5 s at 10 fps) and comes back a face width to the right: no box overlap, so
    only appearance (and the loose position gate) can give B its id back."""
    centres = []
    for f in range(30):
        step = min(f, 19)
        a = (90 + 15 * step, 105)
        b = (390 - 15 * step + 75, 134) if f >= 27 else (390 - 15 * step, 140)
        centres.append([a, None if 22 <= f < 27 else b])
    return centres


def render(centres) -> Image.Image:
    canvas = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for y in range(0, HEIGHT, 8):
        draw.rectangle([0, y, WIDTH, y + 3], fill=STRIPE)
    for look, centre in reversed(list(zip(LOOKS, centres))):   # A (index 0) drawn last: in front
        if centre is not None:
            paste_face(canvas, look, centre)
    return canvas


@pytest.fixture(scope="module")
def detected(tmp_path_factory):
    """The scene encoded as H.264, decoded back and detected: per frame (boxes, probs, appearance)."""
    path = str(tmp_path_factory.mktemp("people") / "crossing.mp4")
    write_video(path, [render(c) for c in scene()], audio=None, fps=10)
    with av.open(path) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == len(scene())
    detector = FaceDetector()
    found = [d for i in range(0, len(frames), 8) for d in detector(np.stack(frames[i:i + 8]))]
    return [(boxes, probs, appearance(frame, boxes)) for frame, (boxes, probs) in zip(frames, found)]


def track(detected, use_appearance: bool = True) -> list[tuple[np.ndarray, np.ndarray, list]]:
    """Per frame (ids, boxes, drawn centres)."""
    tracker = PeopleTracker(max_gap=gap_frames(10))
    return [(tracker.update(boxes, probs, hists if use_appearance else None), boxes, centres)
            for (boxes, probs, hists), centres in zip(detected, scene())]


@pytest.fixture(scope="module")
def tracked(detected):
    return track(detected)


def drawn_person(box: np.ndarray, centres) -> int | None:
    """Which drawn face (0 = A, 1 = B) a detected box is on: the nearest visible centre within 30 px."""
    centre = (box[:2] + box[2:]) / 2
    dist = [np.inf if c is None else np.hypot(*(centre - c)) for c in centres]
    return int(np.argmin(dist)) if min(dist) < 30 else None


def test_ids_survive_crossing_and_gap_and_are_never_shared(tracked):
    ids_of = {0: [], 1: []}
    for f, (ids, boxes, centres) in enumerate(tracked):
        kept = ids[ids >= 0]
        assert len(set(kept.tolist())) == len(kept), f"frame {f}: two faces share an id: {ids}"
        for person, box in zip(ids, boxes):
            who = drawn_person(box, centres)
            if person >= 0 and who is not None:
                ids_of[who].append((f, int(person)))
    frames_a, frames_b = ({f for f, _ in ids_of[k]} for k in (0, 1))
    # the scene tests what it claims: both found before and after crossing; B before and after its gap
    # (B, partly hidden at first, is detected at p 0.71-0.86 until frame 4: below the tracker's birth threshold)
    assert min(frames_a) <= 2 and max(frames_a) >= 27 and min(frames_b) <= 4
    assert any(f in frames_b for f in range(16, 22)) and any(f >= 27 for f in frames_b)
    assert len(frames_a) >= 24 and len(frames_b) >= 18
    assert {p for _, p in ids_of[0]} == {0}, ids_of[0]       # A, further left, appeared first in the
    assert {p for _, p in ids_of[1]} == {1}, ids_of[1]       # left-to-right order of frame 0
    people = summary([ids for ids, _, _ in tracked], [boxes for _, boxes, _ in tracked])
    assert people[0].person == 0 and people[0].frames == len(frames_a)


def test_without_appearance_b_comes_back_as_a_new_person(detected):
    """B's return is out of reach of box overlap: the id above is the appearance re-identification's."""
    ids_after_gap = {int(p) for ids, boxes, centres in track(detected, use_appearance=False)[27:]
                     for p, b in zip(ids, boxes) if drawn_person(b, centres) == 1}
    assert ids_after_gap == {2}


def test_appearance_tells_the_drawn_faces_apart():
    """The similarity gate sits between same-face and other-face Bhattacharyya coefficients."""
    frame = np.asarray(render([(120, 120), (360, 120)]))
    other = np.asarray(render([(330, 120), (150, 120)]))
    boxes = np.array([[80, 70, 160, 170], [320, 70, 400, 170]], np.float32)
    a, b = appearance(frame, boxes)
    b2, a2 = appearance(other, boxes + np.array([[30, 0, 30, 0], [-30, 0, -30, 0]]))
    tracker = PeopleTracker()
    assert a @ a2 > tracker.min_similarity > a @ b and b @ b2 > tracker.min_similarity > b @ a2


def box(cx: float, cy: float = 100, size: float = 60) -> list[float]:
    return [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]


def run(tracker: PeopleTracker, frames: list[list], embeddings: list | None = None) -> list[list[int]]:
    out = []
    for f, boxes in enumerate(frames):
        emb = None if embeddings is None else np.asarray(embeddings[f], np.float32).reshape(len(boxes), 3)
        out.append(tracker.update(np.asarray(boxes, np.float32).reshape(-1, 4), np.ones(len(boxes)), emb).tolist())
    return out


def test_crossing_boxes_keep_ids_by_motion_without_embeddings():
    # two faces cross; the one behind is missed for 3 frames while hidden
    frames = []
    for f in range(20):
        a, b = box(50 + 20 * f), box(430 - 20 * f, cy=110)
        frames.append([a] if 8 <= f < 11 else [a, b])
    ids = run(PeopleTracker(max_gap=5), frames)
    assert all(i == [0] for i in ids[8:11])
    assert all(i == [0, 1] for i in ids[:8] + ids[11:])


def test_short_gap_reidentified_by_appearance_long_gap_gets_new_id():
    red, blue = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    # a person vanishes for 4 frames and reappears 1.5 box sizes away: no overlap, same appearance
    frames = [[box(100)]] * 3 + [[]] * 4 + [[box(190)]]
    assert run(PeopleTracker(max_gap=5), frames, [[red]] * 3 + [[]] * 4 + [[red]]) == [[0]] * 3 + [[]] * 4 + [[0]]
    # the same after a gap longer than max_gap: a new id
    assert run(PeopleTracker(max_gap=3), frames, [[red]] * 3 + [[]] * 4 + [[red]])[-1] == [1]
    # a different-looking person in the lost one's place is not taken for them
    assert run(PeopleTracker(max_gap=5), frames, [[red]] * 3 + [[]] * 4 + [[blue]])[-1] == [1]
    # and without embeddings nobody is re-identified away from the predicted box
    assert run(PeopleTracker(max_gap=5), frames)[-1] == [1]


def test_two_detections_on_one_track_never_share_its_id():
    frames = [[box(100)], [box(100), box(105)], [box(100), box(105)]]
    ids = run(PeopleTracker(), frames)
    assert ids[0] == [0] and sorted(ids[1]) == [0, 1] and ids[2] == ids[1]


def test_new_ids_in_order_of_appearance_and_weak_detections_rejected():
    tracker = PeopleTracker()
    boxes = np.array([box(300), box(100), box(200)], np.float32)
    assert tracker.update(boxes, np.array([0.99, 0.95, 0.5])).tolist() == [1, 0, -1]
    assert tracker.update(np.array([box(500), *boxes]), np.array([0.99, 0.99, 0.99, 0.99])).tolist() == [3, 1, 0, 2]
    assert tracker.update(np.zeros((0, 4)), np.zeros(0)).tolist() == []
    # a weak detection continues the track it overlaps (the frame before), but starts none
    assert tracker.update(np.array([box(102), box(600)]), np.array([0.8, 0.8])).tolist() == [-1, -1]
    tracker = PeopleTracker()
    tracker.update(np.array([box(100)]), np.array([0.99]))
    assert tracker.update(np.array([box(102), box(600)]), np.array([0.8, 0.8])).tolist() == [0, -1]


def test_summary_orders_by_screen_time_and_sides_by_position():
    ids = [np.array([0, 1]), np.array([1]), np.array([1, 2]), np.array([2, 1, -1])]
    boxes = [np.array([box(400), box(100)]), np.array([box(110)]), np.array([box(120), box(300)]),
             np.array([box(310), box(130), box(0)])]
    people = summary(ids, boxes)
    assert people == [TrackSummary(1, 4, 0, 3, 115.0), TrackSummary(2, 2, 2, 3, 305.0),
                      TrackSummary(0, 1, 0, 0, 400.0)]
    assert pick_sides(people) == {"left": 1, "right": 2}      # the short track 0 is ignored
    assert pick_sides(people[:1]) == {"left": 1, "right": 1} and pick_sides([]) == {}
    assert gap_frames(25) == 25 and gap_frames(10) == 10 and gap_frames(30) == 30
