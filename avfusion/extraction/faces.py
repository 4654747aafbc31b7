"""Extractors on the face of each frame that the facenet stage found (its store's boxes and points):
no second detection, and the same face in every face extractor's rows.

Their stage (faces@<name>) runs after the facenet stage and depends on its store; their provenance
records that store's (`boxes`), so new facenet params or weights move the faces and rebuild them.
Frames without a face there are zero and not valid. Each trial follows its own person, so trials do
not share rows. In the pipeline the facenet rows come from the store; `avfusion predict` passes the
rows it just computed (`Video.faces`).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from avfusion import paths
from avfusion.errors import DatasetError
from avfusion.extraction.base import Extractor, Video
from avfusion.sources import media
from avfusion.store.reader import FeatureReader

FACES = "facenet"       # the extractor whose store holds the face of each frame


def pixel_box(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """A face box (x1, y1, x2, y2, float pixels) as the integer slice `frame[y1:y2, x1:x2]` that the
    reference code takes (`box.astype(int)`), clipped to the frame and at least one pixel wide."""
    x1, y1 = min(max(int(box[0]), 0), width - 1), min(max(int(box[1]), 0), height - 1)
    x2, y2 = min(max(int(box[2]), x1 + 1), width), min(max(int(box[3]), y1 + 1), height)
    return x1, y1, x2, y2


def open_faces(needed_by: str) -> FeatureReader:
    try:
        return FeatureReader(paths.features_dir(FACES))
    except DatasetError:
        raise DatasetError(f"{needed_by} reads the faces of {paths.features_dir(FACES)}: "
                           f"run the {FACES} stage first") from None


def settle_batch_norms(network, size: int, mean, std, seed: int) -> None:
    """Seeded random weights of a face encoder: its batch norms' statistics measured on seeded smooth
    noise (normalised like its input), so that the untrained network's outputs vary with its input;
    with the default statistics (0, 1) they come out nearly constant, and a parity test on them
    would prove little. Leaves `network` in eval mode."""
    import torch
    generator = torch.Generator().manual_seed(seed)
    noise = torch.nn.functional.interpolate(torch.rand(16, 3, 8, 8, generator=generator), size=(size, size),
                                            mode="bilinear")
    noise = (noise - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None                 # the plain mean over the one batch
    network.train()
    with torch.no_grad():
        network(noise)
    network.eval()


class FaceExtractor(Extractor):
    reads_faces = True
    store: FeatureReader | None = None          # the facenet store, opened by the first video that needs it

    def provenance(self) -> dict:
        boxes = {k: v for k, v in open_faces(self.name).provenance.items() if k != "videos_sha256"}
        return {**super().provenance(), "boxes": boxes}

    def faces(self, video: Video) -> dict[str, np.ndarray]:
        """The facenet rows of a trial (`face_columns`): given with the video, or read from the store."""
        if video.faces is not None:
            return video.faces
        self.store = self.store or open_faces(self.name)
        missing = [c for c in self.face_columns if c not in self.store.arrays[0]]
        if video.id not in self.store.index or missing:
            raise DatasetError(f"{video.id}: not in {self.store.directory}{f' with {missing}' if missing else ''} "
                               f"(re-run the {FACES} stage)")
        rows = self.store.rows(video.id, self.face_columns).columns
        if len(rows["valid"]) != len(video.times):
            raise DatasetError(f"{video.id}: {len(rows['valid'])} face rows but {len(video.times)} frames "
                               f"(the video changed: re-run the {FACES} stage)")
        return rows

    def rows(self, video: Video) -> dict[str, np.ndarray]:
        return self.on_faces(video, self.faces(video))

    def on_faces(self, video: Video, faces: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The rows of a trial given its facenet rows (`face_columns`, one per decoded frame)."""
        raise NotImplementedError

    def encode_faces(self, video: Video, faces: dict[str, np.ndarray], prepare: Callable[[np.ndarray, np.ndarray], np.ndarray],
                     encode: Callable[[np.ndarray], np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
        """Rows of a network on the face of each frame: the video decoded once, `prepare(rgb_frame, box)`
        gives a face's input, `encode(inputs)` a batch's rows [b, dim], run as soon as a batch is full
        (memory stays one batch of inputs, whatever the video's length). Frames without a face are 0."""
        valid, boxes = faces["valid"].astype(bool), faces["box"]
        out = np.zeros((len(valid), self.dim), np.float32)
        times, pending, where = [], [], []

        def flush():
            if pending:
                out[where] = encode(np.stack(pending))
                pending.clear()
                where.clear()

        for i, (t, frame) in enumerate(media.decode_video(video.path)):
            times.append(t)
            if i < len(valid) and valid[i]:
                pending.append(prepare(frame.to_ndarray(format="rgb24"), boxes[i]))
                where.append(i)
                if len(pending) == batch_size:
                    flush()
        if len(times) != len(valid):
            raise DatasetError(f"{video.path}: {len(times)} decoded frames but {len(valid)} face rows "
                               f"(the video changed: re-run the {FACES} stage)")
        flush()
        return {"embedding": out, "valid": valid, "time": np.asarray(times, np.float64)}
