"""Face detection, one-person tracking and embedding of every decoded frame of a video.

MTCNN (facenet-pytorch's P/R/O-nets and weights, the library's thresholds and box arithmetic) finds
faces on a downscaled copy of each frame; the tracked face is cropped from the full-resolution frame
and embedded by InceptionResnetV1. Speed (docs/design.md §4): the library's `MTCNN.detect` crops every
candidate box with its own resize call and runs max-pooling on NCHW tensors; here the same crops
(the library's crop step, so the same faces result) feed R/O-nets that run channels-last on several
frames' candidates at once, while decoding runs in a background thread.

Detect and track (`detect_every: k`): the full cascade runs on every k-th frame; in between, the
O-net alone re-locates the followed face from squares around its last box (box regression +
probability, the cascade's last stage). A probability below TRACK_THRESHOLD, a jump or a face below
`min_face` counts as lost and the full cascade runs on that frame at once. While a lost face may only
come back where it was (PATIENCE), the O-net looks there first and the cascade runs only if it sees a
face; when any face may be taken, the cascade runs on every frame. Every frame's crop is still
embedded; only detection is skipped, so the rows follow detection on every frame closely.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from facenet_pytorch import InceptionResnetV1
from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
from facenet_pytorch.models.utils.detect_face import batched_nms_numpy, bbreg, generateBoundingBox, rerec
from torchvision.ops import batched_nms, box_iou

from avfusion.landmarks import onet_points
from avfusion.media import decode_video, probe
from avfusion.tracks import MAX_GAP, PeopleTracker, appearance, gap_frames

EMBEDDING_DIM = 512
POOLED_DIM = 1792
CROP_SIZE = 160
MIN_IOU = 0.2          # a detection continues the track when it overlaps the last box this much
PATIENCE = 10          # frames the tracked face may stay unmatched before another face is picked
# Frames per detector call on the CPU: P-net maps of ~4 frames of 640x360 stay in the CPU caches
# (8-16 at once measured slower); tiny frames go in larger groups to save per-call overhead.
CPU_DETECT_PIXELS = 4 * 640 * 360
TRACK_THRESHOLD = 0.7  # a tracked face whose O-net or R-net probability falls below this is lost (the cascade's O-net threshold)
TRACK_SHIFT = 0.3      # tracking also tries squares shifted by this share of the face's size
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


class FaceDetector:
    """Batched MTCNN: the library's networks, cascade and crops, on several frames per call."""

    def __init__(self, device: str = "cpu", min_face: int = 20, thresholds=(0.6, 0.7, 0.7),
                 factor: float = 0.709):
        self.device, self.min_face, self.thresholds, self.factor = device, min_face, thresholds, factor
        self.pnet, self.rnet, self.onet = (net().eval().to(device) for net in (PNet, RNet, ONet))

    @torch.inference_mode()
    def __call__(self, images: np.ndarray, landmarks: bool = False) -> list[tuple[np.ndarray, ...]]:
        """Faces in a batch of same-size RGB images [B, H, W, 3]: per image (boxes [k, 4], probs [k]),
        and with `landmarks` (as `MTCNN.detect`) also the O-net's five points [k, 5, 2] in pixels."""
        imgs = torch.as_tensor(images, device=self.device).permute(0, 3, 1, 2).float()
        boxes, inds = self._propose(imgs)
        boxes, inds, _ = self._refine(imgs, boxes, inds, self.rnet, 24, self.thresholds[1])
        boxes, inds, points = self._refine(imgs, boxes, inds, self.onet, 48, self.thresholds[2])
        boxes, inds, points = boxes.cpu().numpy(), inds.cpu().numpy(), points.cpu().numpy().astype(np.float32)
        return [(boxes[inds == i, :4].astype(np.float32), boxes[inds == i, 4].astype(np.float32))
                + ((points[inds == i],) if landmarks else ()) for i in range(len(images))]

    def _propose(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P-net over the image pyramid (the library's stage 1)."""
        h, w = imgs.shape[2:]
        scale = 12.0 / self.min_face
        boxes, inds = [], []
        while min(h, w) * scale >= 12:
            im = F.interpolate(imgs, size=(int(h * scale + 1), int(w * scale + 1)), mode="area")
            reg, probs = self.pnet((im - 127.5) * 0.0078125)
            found, found_inds = generateBoundingBox(reg, probs[:, 1], scale, self.thresholds[0])
            keep = batched_nms(found[:, :4], found[:, 4], found_inds, 0.5)
            boxes.append(found[keep])
            inds.append(found_inds[keep])
            scale *= self.factor
        boxes = torch.cat(boxes) if boxes else torch.zeros(0, 9, device=imgs.device)
        inds = torch.cat(inds) if inds else torch.zeros(0, dtype=torch.long, device=imgs.device)
        keep = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
        boxes, inds = boxes[keep], inds[keep]
        size = (boxes[:, 2:4] - boxes[:, 0:2]).repeat(1, 2)
        corners = boxes[:, :4] + boxes[:, 5:9] * size
        return rerec(torch.cat([corners, boxes[:, 4:5]], dim=1)), inds

    @staticmethod
    def _score(imgs, boxes, inds, net, size: int, frame: tuple[int, int] | None = None,
               origin: tuple[int, int] = (0, 0)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """R-net or O-net on the square boxes [k, >=4] of images `inds`: (box regression, face probability,
        the O-net's five points [k, 5, 2] in pixels of the frame, None for the R-net).

        The library's crop step (detect_face.py: `pad`, then `imresample`): each box is clipped to the
        frame (`frame` = (width, height), default the images'), pixels [x1 - 1, x2) are cut and
        area-resized, one box at a time since the sizes differ. `imgs` may be a region of the frame
        whose top-left corner is at `origin`. A box wholly outside the frame gets probability 0."""
        width, height = frame or (imgs.shape[3], imgs.shape[2])
        corners = boxes[:, :4].trunc().int().cpu()
        x, y = corners[:, 0].clamp(min=1).tolist(), corners[:, 1].clamp(min=1).tolist()
        ex, ey = corners[:, 2].clamp(max=width).tolist(), corners[:, 3].clamp(max=height).tolist()
        inside = [y2 > y1 - 1 and x2 > x1 - 1 for x1, y1, x2, y2 in zip(x, y, ex, ey)]
        ox, oy = origin
        blank = imgs.new_zeros(1, imgs.shape[1], size, size)
        crops = torch.cat([
            F.interpolate(imgs[i:i + 1, :, y1 - 1 - oy:y2 - oy, x1 - 1 - ox:x2 - ox], size=(size, size), mode="area")
            if keep else blank for i, x1, y1, x2, y2, keep in zip(inds.tolist(), x, y, ex, ey, inside)])
        out = net(((crops - 127.5) * 0.0078125).contiguous(memory_format=torch.channels_last))
        points = onet_points(boxes[:, :4], out[1]) if len(out) == 3 else None   # O-net: (reg, points, prob)
        return out[0], out[-1][:, 1] * torch.tensor(inside, device=crops.device), points

    @torch.inference_mode()
    def track(self, image: np.ndarray, box: np.ndarray,
              motion: np.ndarray) -> tuple[np.ndarray, float, float, np.ndarray]:
        """The face that was at `box` in the previous frame of RGB `image` [H, W, 3] and moved by about
        `motion` (box delta) since the frame before: the O-net's box and five points [5, 2] (as the
        cascade's last stage gives them), and the O-net's and R-net's probabilities for the square around it.

        The O-net's box regression reaches about a quarter of the face's width, so it scores squares
        around the box, its predicted place and shifts of that in one batch, then refines the best."""
        side = float(max(box[2] - box[0], box[3] - box[1]))
        shifts = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], np.float32) * TRACK_SHIFT * side
        candidates = np.concatenate([box[None], box + motion + np.tile(shifts, 2)])
        squares = rerec(torch.as_tensor(np.concatenate([candidates, np.zeros((len(candidates), 1))], 1),
                                        dtype=torch.float32, device=self.device))
        reg, score, _ = self._score_region(image, squares, self.onet, 48)
        best = int(score.argmax())
        square = rerec(bbreg(torch.cat([squares[best:best + 1, :4], score[best:best + 1, None]], 1), reg[best:best + 1]))
        reg, refined, points = self._score_region(image, square, self.onet, 48)
        _, rnet_score, _ = self._score_region(image, square, self.rnet, 24)
        found = bbreg(torch.cat([square[:, :4], refined[:, None]], 1), reg)
        return (found[0, :4].cpu().numpy().astype(np.float32), float(refined[0]), float(rnet_score[0]),
                points[0].cpu().numpy().astype(np.float32))

    def _score_region(self, image: np.ndarray, squares: torch.Tensor, net,
                      size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """R-net or O-net on squares of one image; only the region their clipped crops cover is converted."""
        h, w = image.shape[:2]
        corners = squares[:, :4].trunc()
        x0, y0 = (int(max(0, min(v, n - 1))) for v, n in ((corners[:, 0].min() - 1, w), (corners[:, 1].min() - 1, h)))
        x1, y1 = (int(max(1, min(v, n))) for v, n in ((corners[:, 2].max(), w), (corners[:, 3].max(), h)))
        region = torch.as_tensor(image[y0:y1, x0:x1], device=self.device).permute(2, 0, 1)[None].float()
        inds = torch.zeros(len(squares), dtype=torch.long, device=self.device)
        return self._score(region, squares, inds, net, size, frame=(w, h), origin=(x0, y0))

    def _refine(self, imgs, boxes, inds, net, size: int, threshold: float):
        """R-net or O-net on the candidates (the library's stages 2 and 3): (boxes [k, 5], image indices,
        the O-net's points [k, 5, 2] from the boxes it cropped, as the library computes them; None for the
        R-net). The O-net ends with Min-NMS."""
        if len(boxes) == 0:
            return boxes[:, :5], inds, boxes.new_zeros(0, 5, 2)
        reg, score, points = self._score(imgs, boxes, inds, net, size)
        keep = score > threshold
        boxes = torch.cat([boxes[keep, :4], score[keep, None]], dim=1)
        inds, reg = inds[keep], reg[keep]
        if net is self.rnet:
            keep = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
            return rerec(bbreg(boxes[keep], reg[keep])), inds[keep], None
        boxes, points = bbreg(boxes, reg), points[keep]
        keep = batched_nms_numpy(boxes[:, :4], boxes[:, 4], inds, 0.7, "Min")
        return boxes[keep], inds[keep], points[keep]


class FaceTracker:
    """Follows one person: the largest central face at the start, then the detection overlapping the
    last box; after PATIENCE frames unmatched, picks again. (`_left`/`_right` trials follow the
    multi-person tracker's tracks instead: avfusion/tracks.py.)"""

    def __init__(self, width: int, height: int):
        self.center = np.array([width / 2, height / 2], np.float32)
        self.last, self.missed = None, 0
        self.motion = np.zeros(4, np.float32)   # box change since the frame before, while followed

    @property
    def following(self) -> bool:
        """Whether the last frame had the tracked face (so it can be tracked into this one)."""
        return self.last is not None and self.missed == 0

    def _pick(self, boxes: np.ndarray) -> int:
        centers = (boxes[:, :2] + boxes[:, 2:]) / 2
        area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
        offcenter = np.linalg.norm(centers - self.center, axis=1) / np.linalg.norm(self.center)
        return int(np.argmax(area * (1 - 0.5 * offcenter)))

    def update(self, boxes: np.ndarray) -> int | None:
        """Index of the tracked face among this frame's detections, or None."""
        chosen = None
        if len(boxes) and self.last is not None:
            overlap = box_iou(torch.from_numpy(self.last[None]), torch.from_numpy(boxes))[0].numpy()
            if overlap.max() >= MIN_IOU:
                chosen = int(overlap.argmax())
        if chosen is None and len(boxes) and (self.last is None or self.missed >= PATIENCE):
            chosen = self._pick(boxes)
        if chosen is None:
            self.missed += 1
        else:
            self.motion = boxes[chosen] - self.last if self.following else np.zeros(4, np.float32)
            self.last, self.missed = boxes[chosen], 0
        return chosen


def crop_face(image: np.ndarray, box: np.ndarray, margin: int) -> torch.Tensor:
    """facenet's `extract_face` + `fixed_image_standardization`: a [3, 160, 160] float crop.

    `margin` is in pixels of the 160-px crop, as in the library; the box is clipped to the frame.
    """
    h, w = image.shape[:2]
    pad = margin * (box[2:] - box[:2]) / (CROP_SIZE - margin) / 2
    x1, y1 = min(max(int(box[0] - pad[0]), 0), w - 1), min(max(int(box[1] - pad[1]), 0), h - 1)
    x2, y2 = int(min(box[2] + pad[0], w)), int(min(box[3] + pad[1], h))
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    face = torch.from_numpy(image[y1:y2, x1:x2]).permute(2, 0, 1)[None].float()
    face = F.interpolate(face, size=(CROP_SIZE, CROP_SIZE), mode="bilinear", antialias=True,
                         align_corners=False)
    return ((face[0] - 127.5) / 128.0)


def _prefetch(items: Iterator, depth: int) -> Iterator:
    """Run an iterator in a background thread (PyAV decodes without the GIL): decode overlaps compute."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce():
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put(item)
            buffer.put(done)
        except BaseException as exc:   # re-raised in the consumer (e.g. MediaError)
            buffer.put(exc)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():   # unblock a producer waiting on a full queue
            try:
                buffer.get(timeout=0.1)
            except queue.Empty:
                pass


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
        frames = _prefetch(self._frames(path), depth=self.batch_size)   # one batch decoded ahead
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
        stream = _prefetch(self._frames(path), depth=self.batch_size)
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
