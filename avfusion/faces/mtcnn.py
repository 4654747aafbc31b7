"""Batched MTCNN: facenet-pytorch's P/R/O-nets and weights, the library's thresholds, box arithmetic and
crop step, on several frames per call (docs/design.md §4.2).

The library's `MTCNN.detect` crops every candidate box with its own resize call and runs max-pooling
on NCHW tensors; here the same crops (so the same faces result) feed R/O-nets that run channels-last
on several frames' candidates at once. `track` re-locates one face with the O-net alone, from squares
around its last box (the cascade's last stage): detect-and-track between full detections.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
from facenet_pytorch.models.utils.detect_face import batched_nms_numpy, bbreg, generateBoundingBox, rerec
from torchvision.ops import batched_nms

TRACK_SHIFT = 0.3      # tracking also tries squares shifted by this share of the face's size


def onet_points(boxes: torch.Tensor, marks: torch.Tensor) -> torch.Tensor:
    """MTCNN's five points [k, 5, 2] in image pixels from O-net's landmark output `marks` [k, 10]
    (x0..x4, y0..y4 as fractions of the O-net crop) and the boxes [k, >=4] that were cropped, i.e.
    before O-net's box regression: facenet-pytorch's `detect_face` arithmetic."""
    size = boxes[:, 2:4] - boxes[:, 0:2] + 1
    xs = size[:, :1] * marks[:, :5] + boxes[:, :1] - 1
    ys = size[:, 1:2] * marks[:, 5:10] + boxes[:, 1:2] - 1
    return torch.stack([xs, ys], dim=2)


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
