"""Following every face through a video: a stable person id per detection (docs/design.md §4.2).

Each frame, detections are matched to tracks by Hungarian assignment
(`scipy.optimize.linear_sum_assignment`), so no two detections of a frame ever get the same id:
1. tracks seen in the previous frame take the detections their box overlaps (IoU >= `min_iou` with the
   track's box moved along its recent velocity);
2. lost tracks (missed up to `max_gap` frames) take remaining confident detections that overlap their
   predicted box, or that look alike (cosine similarity of embeddings >= `min_similarity`) near where
   the track was or was heading (centre within `reid_distance` track-box sizes, size within a factor
   of 2): re-identification after an occlusion or missed detections;
3. confident detections still unmatched start new ids, counting up in order of first appearance (left
   to right within a frame).
Each assignment makes as many allowed matches as it can and, among those, maximises the summed
overlap + similarity - 0.1 * distance.

Embeddings: any per-detection vectors. The face network's own embeddings separate people only with
trained weights; with the seeded random weights (the offline default) every crop embeds to nearly the
same vector (cosine > 0.9999 between different drawn faces, measured), so `appearance` gives a colour
histogram of the box instead. In a crowd that is a weak cue (reports/people.md): it vetoes clearly
different looks, and the position gate does the rest.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou

# 1 s at 25 fps (the street clip; Aff-Wild2 is 25-30 fps): long enough for a head turn, a hand in front
# of the face or a passer-by in front, short enough that a lost track does not claim a newcomer.
MAX_GAP = 25
# MTCNN keeps faces from 0.7. On the street clip 15 of 516 fell below 0.9, a jacket texture among them;
# letting them start tracks gave 13 tracks instead of 10, the extra ones 1-3 frames long.
MIN_PROB = 0.9
MIN_IOU = 0.3
MIN_SIMILARITY = 0.9    # Bhattacharyya coefficient of `appearance` histograms: see reports/people.md
REID_DISTANCE = 2.0     # box sizes
HISTOGRAM_BINS = 4      # per RGB channel: 64 bins, coarse enough to ignore small lighting changes
PREDICT_FRAMES = 5      # how far a lost track's box is moved along its velocity
EMBEDDING_MOMENTUM = 0.8  # a track's appearance: running mean, so one blurred frame does not redefine it


def gap_frames(fps: float, seconds: float = MAX_GAP / 25) -> int:
    """`max_gap` for a video of this frame rate: the same time span as MAX_GAP at 25 fps."""
    return max(1, round(fps * seconds))


def appearance(image: np.ndarray, boxes: np.ndarray, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Per box, the square root of its normalised joint RGB histogram [k, bins**3]: the cosine of two
    of these is their Bhattacharyya coefficient (1 = same colour distribution)."""
    h, w = image.shape[:2]
    out = np.zeros((len(boxes), bins ** 3), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(np.round(boxes).astype(int)):
        patch = image[max(y1, 0):min(y2, h), max(x1, 0):min(x2, w)].reshape(-1, 3) // (256 // bins)
        if len(patch):
            counts = np.bincount((patch[:, 0] * bins + patch[:, 1]) * bins + patch[:, 2], minlength=bins ** 3)
            out[i] = np.sqrt(counts / counts.sum())
    return out


@dataclass
class Track:
    person: int
    box: np.ndarray
    embedding: np.ndarray | None
    last_frame: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))

    def predicted(self, frame: int) -> np.ndarray:
        """The last box moved along the recent velocity to `frame` (at most PREDICT_FRAMES ahead:
        over a long gap people stop or turn, and the prediction would run off)."""
        return self.box + np.tile(self.velocity * min(frame - self.last_frame, PREDICT_FRAMES), 2)


class PeopleTracker:
    """Call `update` once per frame, in order; it returns a person id per detection (-1: rejected)."""

    def __init__(self, max_gap: int = MAX_GAP, min_prob: float = MIN_PROB, min_iou: float = MIN_IOU,
                 min_similarity: float = MIN_SIMILARITY, reid_distance: float = REID_DISTANCE):
        self.max_gap, self.min_prob, self.min_iou = max_gap, min_prob, min_iou
        self.min_similarity, self.reid_distance = min_similarity, reid_distance
        self.tracks: list[Track] = []
        self.frame = -1
        self.next_id = 0

    def _scores(self, tracks: list[Track], boxes: np.ndarray, embeddings: np.ndarray | None,
                reidentify: bool) -> np.ndarray:
        """Score of each (track, detection) pair; -inf where the pair may not match."""
        predicted = np.stack([t.predicted(self.frame) for t in tracks])
        last = np.stack([t.box for t in tracks])
        overlap = box_iou(torch.from_numpy(predicted), torch.from_numpy(boxes)).numpy()
        size = np.max(last[:, 2:] - last[:, :2], axis=1)[:, None]
        centre = lambda b: (b[:, :2] + b[:, 2:]) / 2                    # noqa: E731
        det_centre = centre(boxes)[None]
        distance = np.minimum(np.linalg.norm(centre(predicted)[:, None] - det_centre, axis=2),
                              np.linalg.norm(centre(last)[:, None] - det_centre, axis=2)) / size
        ratio = np.max(boxes[:, 2:] - boxes[:, :2], axis=1)[None] / size
        similarity = np.zeros_like(overlap)
        reidentified = np.zeros(overlap.shape, bool)
        if embeddings is not None:
            for i, track in enumerate(tracks):
                if track.embedding is not None:
                    similarity[i] = embeddings @ track.embedding
                    reidentified[i] = ((similarity[i] >= self.min_similarity) & (distance[i] <= self.reid_distance)
                                       & (ratio[i] >= 0.5) & (ratio[i] <= 2))
        allowed = (overlap >= self.min_iou) | (reidentified & reidentify)
        return np.where(allowed, overlap + similarity - 0.1 * distance, -np.inf)

    def update(self, boxes: np.ndarray, probs: np.ndarray, embeddings: np.ndarray | None = None) -> np.ndarray:
        """Person id [k] for this frame's boxes [k, 4], detection probabilities [k] and optional
        embeddings [k, D] (L2-normalised here); -1 for a detection below `min_prob` that continues no track."""
        self.frame += 1
        self.tracks = [t for t in self.tracks if self.frame - t.last_frame - 1 <= self.max_gap]   # missed frames
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        ids = np.full(len(boxes), -1, np.int64)
        confident = np.asarray(probs, np.float32).reshape(-1) >= self.min_prob
        if embeddings is not None:
            embeddings = np.asarray(embeddings, np.float32)
            embeddings = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-9)
        # Tracks seen in the previous frame first, by overlap only; then the lost ones, which may also be
        # re-identified by appearance. In one joint assignment a lost track could take a tracked face
        # and push its track onto a nearby newcomer (seen on the street clip). As in ByteTrack, a weak
        # detection may continue a track it overlaps but neither re-identifies nor starts one.
        seen = [t for t in self.tracks if t.last_frame == self.frame - 1]
        lost = [t for t in self.tracks if t.last_frame < self.frame - 1]
        free = self._match(seen, np.arange(len(boxes)), boxes, embeddings, ids, reidentify=False)
        free = self._match(lost, free[confident[free]], boxes, embeddings, ids, reidentify=True)
        for d in sorted(free, key=lambda d: boxes[d, 0]):
            self.tracks.append(Track(self.next_id, boxes[d].copy(),
                                     None if embeddings is None else embeddings[d].copy(), self.frame))
            ids[d] = self.next_id
            self.next_id += 1
        return ids

    def _match(self, tracks: list[Track], free: np.ndarray, boxes: np.ndarray, embeddings: np.ndarray | None,
               ids: np.ndarray, reidentify: bool) -> np.ndarray:
        """Assign detections `free` to `tracks` (writing `ids`); returns the detections left over."""
        if not tracks or not len(free):
            return free
        emb = None if embeddings is None else embeddings[free]
        scores = self._scores(tracks, boxes[free], emb, reidentify)
        rows, cols = linear_sum_assignment(np.where(np.isfinite(scores), scores, -1e6), maximize=True)
        matched = [(r, c) for r, c in zip(rows, cols) if np.isfinite(scores[r, c])]
        for r, c in matched:
            self._extend(tracks[r], boxes[free[c]], None if emb is None else emb[c])
            ids[free[c]] = tracks[r].person
        return np.delete(free, [c for _, c in matched])

    def _extend(self, track: Track, box: np.ndarray, embedding: np.ndarray | None) -> None:
        step = ((box[:2] + box[2:]) - (track.box[:2] + track.box[2:])) / 2 / (self.frame - track.last_frame)
        track.velocity = 0.5 * track.velocity + 0.5 * step
        track.box, track.last_frame = box.copy(), self.frame
        if embedding is not None:
            mean = embedding if track.embedding is None else \
                EMBEDDING_MOMENTUM * track.embedding + (1 - EMBEDDING_MOMENTUM) * embedding
            track.embedding = mean / max(float(np.linalg.norm(mean)), 1e-9)


@dataclass(frozen=True)
class TrackSummary:
    person: int
    frames: int          # frames on screen (detected and matched)
    first: int
    last: int
    mean_x: float        # mean box centre x, pixels


def summary(ids: list[np.ndarray], boxes: list[np.ndarray]) -> list[TrackSummary]:
    """Per person over a whole video (`ids[f]`, `boxes[f]` as given to and returned by `update`),
    longest on screen first (ties: lower id first)."""
    seen: dict[int, list[tuple[int, float]]] = {}
    for f, (frame_ids, frame_boxes) in enumerate(zip(ids, boxes)):
        for person, box in zip(frame_ids, np.asarray(frame_boxes).reshape(-1, 4)):
            if person >= 0:
                seen.setdefault(int(person), []).append((f, float(box[0] + box[2]) / 2))
    out = [TrackSummary(p, len(v), v[0][0], v[-1][0], float(np.mean([x for _, x in v]))) for p, v in seen.items()]
    return sorted(out, key=lambda s: (-s.frames, s.person))


def pick_sides(tracks: list[TrackSummary]) -> dict[str, int]:
    """Aff-Wild2 `_left` / `_right`: of the two longest tracks, the one further left (by mean centre x)
    is `left`. With a single track, it is both."""
    if not tracks:
        return {}
    longest = sorted(tracks, key=lambda s: (-s.frames, s.person))[:2]
    by_x = sorted(longest, key=lambda s: s.mean_x)
    return {"left": by_x[0].person, "right": by_x[-1].person}


# Everyone in a video as flat rows (`FaceTrackEmbedder.embed_people`): `time` [n] per decoded frame, and per
# tracked face, in frame order, `frame` [m], `person` [m], `box` [m, 4] and any other per-face columns.


def people_summary(people: dict[str, np.ndarray]) -> list[TrackSummary]:
    """`summary` of flat per-face rows."""
    bounds = np.searchsorted(people["frame"], np.arange(len(people["time"]) + 1))
    return summary(np.split(people["person"], bounds[1:-1]), np.split(people["box"], bounds[1:-1]))


def trial_person(people: dict[str, np.ndarray], side: str = "") -> int | None:
    """The person a trial follows: the left- or right-hand one of the two longest tracks for an
    Aff-Wild2 `_left` / `_right` trial (`pick_sides`), else the longest on screen; None without faces."""
    tracks = people_summary(people)
    if not tracks:
        return None
    return pick_sides(tracks)[side] if side else tracks[0].person


def person_rows(people: dict[str, np.ndarray], person: int | None) -> dict[str, np.ndarray]:
    """One row per decoded frame for one person, as one-person extraction gives them: `time`, `valid`,
    every per-face column with zeros where they are not on screen, and `person` (-1 there)."""
    n = len(people["time"])
    mine = people["person"] == person
    frames = people["frame"][mine]
    out = {"time": people["time"], "valid": np.zeros(n, bool)}
    out["valid"][frames] = True
    for name, column in people.items():
        if name not in ("time", "frame"):
            out[name] = np.full((n, *column.shape[1:]), -1 if name == "person" else 0, column.dtype)
            out[name][frames] = column[mine]
    return out
