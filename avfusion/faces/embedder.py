"""Face detection, one-person tracking and embedding of every decoded frame of a video (the facenet extractor).

MTCNN (avfusion/faces/mtcnn.py) finds faces on a downscaled copy of each frame; the tracked face
(avfusion/faces/tracker.py, or everyone's tracks: avfusion/faces/people.py) is cropped from the
full-resolution frame (avfusion/faces/crop.py) and embedded by InceptionResnetV1, while decoding runs
in a background thread.

Detect and track (`detect_every: k`): the full cascade runs on every k-th frame; in between, the
O-net alone re-locates the followed face from squares around its last box (box regression +
probability, the cascade's last stage). A probability below TRACK_THRESHOLD, a jump or a face below
`min_face` counts as lost and the full cascade runs on that frame at once. While a lost face may only
come back where it was (PATIENCE), the O-net looks there first and the cascade runs only if it sees a
face; when any face may be taken, the cascade runs on every frame. Every frame's crop is still
embedded; only detection is skipped, so the rows follow detection on every frame closely.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from facenet_pytorch import InceptionResnetV1
from torchvision.ops import box_iou

from avfusion.faces.crop import crop_face
from avfusion.faces.mtcnn import FaceDetector
from avfusion.faces.people import MAX_GAP, PeopleTracker, appearance, gap_frames
from avfusion.faces.tracker import MIN_IOU, PATIENCE, FaceTracker
from avfusion.sources.media import decode_video, prefetch, probe

EMBEDDING_DIM = 512
POOLED_DIM = 1792
# Frames per detector call on the CPU: P-net maps of ~4 frames of 640x360 stay in the CPU caches
# (8-16 at once measured slower); tiny frames go in larger groups to save per-call overhead.
CPU_DETECT_PIXELS = 4 * 640 * 360
TRACK_THRESHOLD = 0.7  # a tracked face whose O-net or R-net probability falls below this is lost (the cascade's O-net threshold)
PROBE_THRESHOLD = 0.1  # a just-lost face's last place looks this face-like: run the full cascade there
NO_POINTS = np.zeros((5, 2), np.float32)   # the landmarks of a frame without a face


def random_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """Seeded random InceptionResnetV1 weights: the offline default (no download needed)."""
    torch.manual_seed(seed)
    return InceptionResnetV1(pretrained=None, classify=False).state_dict()


def load_embedder(weights: str | dict, device: str) -> InceptionResnetV1:
    """InceptionResnetV1 from a state-dict file (or dict); a classifier head in the file is dropped."""
    state = torch.load(weights, map_location="cpu", weights_only=True) if isinstance(weights, str) else weights
    net = InceptionResnetV1(pretrained=None, classify=False)
    net.load_state_dict({k: v for k, v in state.items() if not k.startswith("logits.")})
    # channels-last: the embedding runs ~15% faster on the CPU (street clip, 1 thread: detect-and-track
    # 22.8 -> 26.2 frames/s, detection on every frame 9.4 -> 9.9; reports/bench.json detect_and_track)
    return net.eval().to(device, memory_format=torch.channels_last)



class FaceTrackEmbedder:
    """Built once, reused for every video: `embed_video(path)` gives one row per frame."""

    def __init__(self, weights: str | dict, device: str = "cpu", detect_size: int = 640,
                 min_face: int = 20, margin: int = 20, batch_size: int = 32, keep_pooled: bool = False,
                 detect_every: int = 1):
        if detect_every < 1:
            raise ValueError(f"detect_every must be at least 1, not {detect_every}")
        self.device, self.detect_size, self.margin, self.detect_every = device, detect_size, margin, detect_every
        self.batch_size, self.keep_pooled = batch_size, keep_pooled
        self.detector = FaceDetector(device, min_face)
        self.net = load_embedder(weights, device)
        self._pooled: list[torch.Tensor] = []
        self.net.avgpool_1a.register_forward_hook(lambda _m, _i, out: self._pooled.append(out.flatten(1)))

    def _frames(self, path: str) -> Iterator[tuple[float, np.ndarray, np.ndarray, float]]:
        """(time, full-resolution RGB, detection-size RGB, detection scale) per decoded frame."""
        for t, frame in decode_video(path):
            scale = min(1.0, self.detect_size / max(frame.width, frame.height))
            small = frame.reformat(max(1, round(frame.width * scale)), max(1, round(frame.height * scale)),
                                   format="rgb24", interpolation="AREA")
            yield t, frame.to_ndarray(format="rgb24"), small.to_ndarray(), frame.width / small.width

    @torch.inference_mode()
    def _embed(self, crops: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        self._pooled.clear()
        batch = torch.stack(crops).to(self.device).contiguous(memory_format=torch.channels_last)
        # fp16 autocast only on CUDA: CPU output stays float32 and bit-reproducible.
        with torch.autocast("cuda", enabled=self.device.startswith("cuda")):
            embedding = self.net(batch)
        return embedding.float().cpu(), self._pooled[0].float().cpu()

    def _detect(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Full cascade on same-size RGB frames, in groups that suit the device: (boxes, probs, points)."""
        if not images:
            return []
        smalls = np.stack(images)
        step = len(smalls) if self.device.startswith("cuda") else self._group(smalls[0])
        return [d for i in range(0, len(smalls), step) for d in self.detector(smalls[i:i + step], landmarks=True)]

    @staticmethod
    def _group(small: np.ndarray) -> int:
        """Frames per cascade call on the CPU."""
        return max(1, CPU_DETECT_PIXELS // small[..., 0].size)

    def _track(self, small: np.ndarray, scale: float,
               tracker: FaceTracker) -> tuple[np.ndarray, float, np.ndarray] | None:
        """The followed face re-located by the O-net (full-resolution box, probability, five points), or
        None when lost."""
        box, prob, rnet_prob, points = self.detector.track(small, tracker.last / scale, tracker.motion / scale)
        side = min(box[2] - box[0], box[3] - box[1])
        moved = box_iou(torch.from_numpy(tracker.last[None] / scale), torch.from_numpy(box[None]))[0, 0]
        if min(prob, rnet_prob) < TRACK_THRESHOLD or side < self.detector.min_face or moved < MIN_IOU:
            return None
        return box * scale, prob, points * scale

    def _face(self, small: np.ndarray, scale: float, tracker: FaceTracker,
              detection: tuple[np.ndarray, ...] | None) -> tuple[np.ndarray, float, np.ndarray] | None:
        """This frame's followed face (full-resolution box, probability, MTCNN's five points [5, 2]) or
        None; `detection` is the frame's full cascade when one was due."""
        if detection is None and tracker.following:
            tracked = self._track(small, scale, tracker)
            if tracked is not None:
                tracker.update(tracked[0][None])
                return tracked
        elif detection is None and tracker.last is not None and tracker.missed < PATIENCE:
            # Lost a moment ago: only a face overlapping its last box could be taken, so look there first.
            _, prob, rnet_prob, _ = self.detector.track(small, tracker.last / scale, np.zeros(4, np.float32))
            if min(prob, rnet_prob) < PROBE_THRESHOLD:
                tracker.update(np.zeros((0, 4), np.float32))
                return None
        found, probs, points = detection if detection is not None else self._detect([small])[0]
        chosen = tracker.update(found * scale)
        return None if chosen is None else (found[chosen] * scale, probs[chosen], points[chosen] * scale)

    def embed_video(self, path: str) -> dict[str, np.ndarray]:
        """Rows for every decoded frame: embedding [n, 512], valid [n], box [n, 4] and landmarks [n, 10]
        (MTCNN's five points, x and y in avfusion/landmarks.py's order; both full-resolution pixels),
        prob [n], time [n], and pooled [n, 1792] when `keep_pooled`. Raises MediaError."""
        times, embeddings, pooled, boxes, points, probs, valid = [], [], [], [], [], [], []
        tracker, first = None, 0
        frames = prefetch(self._frames(path), depth=self.batch_size)   # one batch decoded ahead
        while batch := [item for _, item in zip(range(self.batch_size), frames)]:
            if tracker is None:
                tracker = FaceTracker(batch[0][1].shape[1], batch[0][1].shape[0])
            due = [i for i in range(len(batch)) if (first + i) % self.detect_every == 0]
            detections = dict(zip(due, self._detect([batch[i][2] for i in due])))
            first += len(batch)
            crops, rows = [], []
            for i, (t, full, small, scale) in enumerate(batch):
                if i not in detections and not tracker.following and (tracker.last is None or tracker.missed >= PATIENCE):
                    # Searching: the cascade runs here and likely on the next frames too. Small frames go
                    # in groups (per-call overhead); large ones one by one (no work lost once a face is found).
                    ahead = [j for j in range(i, min(len(batch), i + self._group(small) // 4 or 1)) if j not in detections]
                    detections.update(zip(ahead, self._detect([batch[j][2] for j in ahead])))
                face = self._face(small, scale, tracker, detections.get(i))
                box, prob, marks = face if face is not None else (np.zeros(4, np.float32), 0.0, NO_POINTS)
                times.append(t)
                boxes.append(box)
                points.append(marks.reshape(10))
                probs.append(prob)
                valid.append(face is not None)
                if face is not None:
                    crops.append(crop_face(full, box, self.margin))
                    rows.append(i)
            embedding = torch.zeros(len(batch), EMBEDDING_DIM)
            pool = torch.zeros(len(batch), POOLED_DIM)
            if crops:
                embedding[rows], pool[rows] = self._embed(crops)
            embeddings.append(embedding.numpy())
            if self.keep_pooled:
                pooled.append(pool.numpy())
        n = len(times)
        out = {
            "embedding": np.concatenate(embeddings) if n else np.zeros((0, EMBEDDING_DIM), np.float32),
            "valid": np.asarray(valid, bool).reshape(n),
            "box": np.asarray(boxes, np.float32).reshape(n, 4),
            "landmarks": np.asarray(points, np.float32).reshape(n, 10),
            "prob": np.asarray(probs, np.float32).reshape(n),
            "time": np.asarray(times, np.float64).reshape(n),
        }
        if self.keep_pooled:
            out["pooled"] = np.concatenate(pooled) if n else np.zeros((0, POOLED_DIM), np.float32)
        return out

    def embed_people(self, path: str) -> dict[str, np.ndarray]:
        """Everyone in every decoded frame (`visual.people: all`, Aff-Wild2 `_left` / `_right`): the
        full cascade on every frame (`detect_every` does not apply: O-net tracking follows one face),
        ids from `PeopleTracker` (box overlap, then `appearance` for re-identification), and every
        tracked face cropped and embedded. Returns `time` [n] per decoded frame and, per tracked face in
        frame order (then by id), `frame` [m], `person` [m], `box` [m, 4] (full-resolution pixels),
        `landmarks` [m, 10], `prob` [m], `embedding` [m, 512] and, with `keep_pooled`, `pooled` [m, 1792].
        Raises MediaError."""
        fps = probe(path).fps
        tracker = PeopleTracker(max_gap=gap_frames(fps) if fps > 0 else MAX_GAP)
        times, frames, persons, boxes, points, probs, embeddings, pooled = [], [], [], [], [], [], [], []
        stream = prefetch(self._frames(path), depth=self.batch_size)
        while batch := [item for _, item in zip(range(self.batch_size), stream)]:
            crops = []
            for (t, full, _, scale), (found, found_probs, found_points) in zip(batch, self._detect([b[2] for b in batch])):
                found = found * scale
                ids = tracker.update(found, found_probs, appearance(full, found))
                for d in sorted(np.flatnonzero(ids >= 0), key=lambda d: ids[d]):
                    frames.append(len(times))
                    persons.append(ids[d])
                    boxes.append(found[d])
                    points.append(found_points[d] * scale)
                    probs.append(found_probs[d])
                    crops.append(crop_face(full, found[d], self.margin))
                times.append(t)
            for i in range(0, len(crops), self.batch_size):     # a crowd: many faces per frame
                embedding, pool = self._embed(crops[i:i + self.batch_size])
                embeddings.append(embedding.numpy())
                pooled.append(pool.numpy())
        m = len(frames)
        out = {
            "time": np.asarray(times, np.float64),
            "frame": np.asarray(frames, np.int32).reshape(m),
            "person": np.asarray(persons, np.int32).reshape(m),
            "box": np.asarray(boxes, np.float32).reshape(m, 4),
            "landmarks": np.asarray(points, np.float32).reshape(m, 10),
            "prob": np.asarray(probs, np.float32).reshape(m),
            "embedding": np.concatenate(embeddings) if m else np.zeros((0, EMBEDDING_DIM), np.float32),
        }
        if self.keep_pooled:
            out["pooled"] = np.concatenate(pooled) if m else np.zeros((0, POOLED_DIM), np.float32)
        return out
