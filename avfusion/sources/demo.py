"""The built-in demo dataset: real H.264 + AAC videos of a drawn face and a voice-like sound whose
appearance and sound follow known valence/arousal curves, with labels in the Aff-Wild2 format.

Designed so the task is learnable through the real extractors but not trivial, and fusion helps:
- valence shows mostly in the face (a large mouth shape: smile / frown), barely in the voice (timbre:
  with a stronger timbre cue, audio alone reached valence CCC 0.78 against 0.61 for the face);
- arousal shows in both, each through its own noise: eye openness in the face; loudness, pitch and
  syllable rate in the voice;
- some videos lose the face for a while (the person turns away) and some go silent, so each modality
  must cover for the other; some label runs are -5 (not annotated).
Cues are large in area and contrast: with seeded random embedding weights a linear probe recovers
large shapes well but thin lines barely (docs/design.md §3).
"""
from __future__ import annotations

import os

import av
import numpy as np
from PIL import Image, ImageDraw

from avfusion.sources.annotations import write_labels

SAMPLE_RATE = 16000
SPLIT_CYCLE = ("train", "train", "train", "validation", "test")


def smooth_curve(rng: np.random.Generator, t: np.ndarray, low: float = 0.04, high: float = 0.35) -> np.ndarray:
    """A slow random curve in [-0.9, 0.9]: a few sinusoids of random frequency and phase."""
    y = sum(rng.uniform(0.3, 1) * np.sin(2 * np.pi * rng.uniform(low, high) * t + rng.uniform(0, 2 * np.pi))
            for _ in range(3))
    y = y - y.mean()
    return 0.9 * y / max(np.abs(y).max(), 1e-6)


def draw_face(size: int, look: dict, valence: float, eye_open: float, center: tuple[float, float]) -> Image.Image:
    img = Image.new("RGB", (size, size), look["background"])
    draw = ImageDraw.Draw(img)
    for y in range(0, size, 8):   # a coarse stripe texture so the background is not flat
        draw.rectangle([0, y, size, y + 3], fill=look["stripe"])
    cx, cy = center
    fw, fh = look["face_w"] * size, look["face_h"] * size
    draw.ellipse([cx - fw / 2, cy - fh / 2, cx + fw / 2, cy + fh / 2], fill=look["skin"])
    eye_w, eye_h = 0.2 * fw, max(0.02, eye_open) * 0.22 * fh
    for ex in (cx - 0.22 * fw, cx + 0.22 * fw):
        ey = cy - 0.12 * fh
        draw.ellipse([ex - eye_w / 2, ey - eye_h / 2, ex + eye_w / 2, ey + eye_h / 2], fill=(250, 250, 250))
        r = min(eye_w, eye_h) * 0.45
        draw.ellipse([ex - r, ey - r, ex + r, ey + r], fill=(30, 20, 20))
        # Brows matter: without them MTCNN finds these drawn faces in ~1 frame of 3 (measured).
        draw.rectangle([ex - eye_w / 2, ey - 0.14 * fh, ex + eye_w / 2, ey - 0.10 * fh], fill=(60, 40, 30))
    draw.polygon([(cx, cy - 0.02 * fh), (cx - 0.06 * fw, cy + 0.12 * fh), (cx + 0.06 * fw, cy + 0.12 * fh)],
                 fill=tuple(int(c * 0.8) for c in look["skin"]))
    # Mouth: a thick filled arc; smile bulges down, frown bulges up, its height grows with |valence|.
    # (a mouth much larger than this stops MTCNN from seeing a face)
    mw, my = 0.3 * fw, cy + 0.28 * fh
    mh = (0.025 + 0.13 * abs(valence)) * fh
    box = [cx - mw / 2, my - mh, cx + mw / 2, my + mh]
    start, end = (0, 180) if valence >= 0 else (180, 360)
    draw.pieslice(box, start, end, fill=(120, 20, 30))
    draw.rectangle([cx - mw / 2, my - 0.015 * fh, cx + mw / 2, my + 0.015 * fh], fill=(120, 20, 30))
    return img


def voice(rng: np.random.Generator, seconds: float, valence: np.ndarray, arousal: np.ndarray,
          fps: float, silences: list[tuple[float, float]]) -> np.ndarray:
    """A buzzy voice: loudness, pitch and syllable rate follow (noisy) arousal; timbre weakly valence."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    frame_t = np.arange(len(arousal)) / fps
    a_voice = np.interp(t, frame_t, np.clip(arousal + 0.25 * smooth_curve(rng, frame_t, 0.3, 1.5), -1, 1))
    v_voice = np.interp(t, frame_t, valence)
    f0 = 120 + 70 * a_voice + 8 * np.sin(2 * np.pi * 5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    tilt = 1.6 - 0.12 * v_voice                  # slightly brighter timbre when positive: a weak cue
    wave = sum(np.sin(k * phase) / k ** tilt for k in range(1, 12))
    syllables = 2.0 + 2.5 * (a_voice + 1) / 2
    envelope = (0.5 + 0.5 * np.sin(2 * np.pi * np.cumsum(syllables) / SAMPLE_RATE)) ** 2
    loudness = 0.03 + 0.25 * ((a_voice + 1) / 2) ** 1.5
    audio = loudness * envelope * wave / 3 + 0.004 * rng.standard_normal(len(t))
    for start, stop in silences:
        audio[int(start * SAMPLE_RATE):int(stop * SAMPLE_RATE)] = 0.0
    return np.clip(audio, -1, 1).astype(np.float32)


def write_video(path: str, frames: list[Image.Image], audio: np.ndarray | None, fps: int,
                sample_rate: int = SAMPLE_RATE) -> None:
    """Encode RGB frames as H.264 and (if given) mono float audio as AAC; also used by the tests."""
    with av.open(path, "w") as out:
        vstream = out.add_stream("libx264", rate=fps)
        vstream.width, vstream.height = frames[0].size
        # 4:2:0 needs even sizes (the demo's); odd ones (the tests' edge cases) go in 4:4:4
        vstream.pix_fmt = "yuv444p" if vstream.width % 2 or vstream.height % 2 else "yuv420p"
        # Bit-reproducible bytes: one encoder thread (else output depends on core count and load) and
        # x264's C code (asm=0). With its assembly (AVX-512 here), the same frames encoded to different
        # bytes depending on what the process had done before, and the float asm (mb-tree) is not
        # bit-exact with the C code, so results also differed between CPUs. Costs ~0.3 s per video.
        vstream.thread_count = 1
        vstream.options = {"crf": "20", "x264-params": "threads=1:lookahead-threads=1:asm=0"}
        astream = out.add_stream("aac", rate=sample_rate, layout="mono") if audio is not None else None
        for img in frames:
            out.mux(vstream.encode(av.VideoFrame.from_image(img)))
        out.mux(vstream.encode())
        if astream is None:
            return
        for start in range(0, len(audio), 1024):
            chunk = av.AudioFrame.from_ndarray(audio[None, start:start + 1024], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = sample_rate, start
            out.mux(astream.encode(chunk))
        out.mux(astream.encode())


def make_video(index: int, params: dict, out_dir: str) -> tuple[str, str]:
    rng = np.random.default_rng([params["seed"], index])
    fps, seconds, size = params["fps"], params["seconds"], params["size"]
    n = int(fps * seconds)
    t = np.arange(n) / fps
    valence, arousal = smooth_curve(rng, t), smooth_curve(rng, t)
    background = rng.integers(20, 110, 3)      # darker than any skin tone: the face must stand out
    look = {"background": tuple(background.tolist()), "stripe": tuple((background + rng.integers(10, 40, 3)).tolist()),
            "skin": tuple(rng.integers([170, 120, 90], [250, 200, 170]).tolist()),
            "face_w": rng.uniform(0.45, 0.55), "face_h": rng.uniform(0.6, 0.7)}
    eye_open = np.clip((arousal + 1) / 2 + 0.3 * smooth_curve(rng, t, 0.3, 1.5), 0.05, 1)
    face_valence = np.clip(valence + 0.15 * smooth_curve(rng, t, 0.3, 1.5), -1, 1)
    drift = 0.06 * size * np.stack([smooth_curve(rng, t, 0.05, 0.2), smooth_curve(rng, t, 0.05, 0.2)], 1)
    away = (0.0, 0.0)
    if index % 3 == 1:                         # the person turns away for a while: no face
        start = rng.uniform(0.15, 0.6) * seconds
        away = (start, start + rng.uniform(0.12, 0.25) * seconds)
    silences = []
    if index % 3 == 2:                         # the speaker pauses: digital silence
        start = rng.uniform(0.15, 0.6) * seconds
        silences = [(start, start + rng.uniform(0.12, 0.25) * seconds)]
    frames = []
    for k in range(n):
        if away[0] <= t[k] < away[1]:
            frames.append(draw_face(size, {**look, "face_w": 0, "face_h": 0}, 0, 0, (size / 2, size / 2)))
            continue
        center = (size / 2 + drift[k, 0], size / 2 + drift[k, 1])
        frames.append(draw_face(size, look, face_valence[k], eye_open[k], center))
    video_id = f"demo-{index:02d}"
    write_video(os.path.join(out_dir, "videos", f"{video_id}.mp4"), frames,
                voice(rng, seconds, valence, arousal, fps, silences), fps)
    labels = np.stack([valence, arousal], 1).astype(np.float32)
    if index % 4 == 3:                         # an annotator gap
        gap = int(rng.integers(0, n - fps))
        labels[gap:gap + fps // 2] = -5
    write_labels(os.path.join(out_dir, "labels", f"{video_id}.txt"), labels)
    return video_id, SPLIT_CYCLE[index % len(SPLIT_CYCLE)]
