"""Decoding video frames and audio with PyAV, with clear errors on bad media.

Every extractor uses the same clock: times are seconds relative to the start of the video stream,
so visual row t and audio row t describe the same instant (audio row t is centred on frame t).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import av
import numpy as np


class MediaError(Exception):
    """A video that cannot be used; the message names the file and the problem in one line."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float
    frames: int          # frame count the container declares (may be 0 when unknown)
    width: int
    height: int
    has_audio: bool
    duration: float


def _open(path: str) -> av.container.InputContainer:
    if not os.path.exists(path):
        raise MediaError(f"{path}: file not found")
    if os.path.getsize(path) == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")
    try:
        return av.open(path)
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise MediaError(f"{path}: not a readable media file ({exc.__class__.__name__}: {exc})") from None


def _video_stream(container, path: str):
    if not container.streams.video:
        raise MediaError(f"{path}: no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None or stream.codec_context.name is None:
        raise MediaError(f"{path}: unsupported video codec")
    return stream


def probe(path: str) -> VideoInfo:
    with _open(path) as container:
        stream = _video_stream(container, path)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        duration = float(container.duration / av.time_base) if container.duration else 0.0
        return VideoInfo(path=path, fps=fps, frames=int(stream.frames or 0), width=stream.width,
                         height=stream.height, has_audio=bool(container.streams.audio), duration=duration)


def _stream_start(stream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def decode_video(path: str) -> Iterator[tuple[float, "av.VideoFrame"]]:
    """Yield (time, frame) for every decoded frame, in presentation order.

    Times come from the frames' own timestamps (variable frame rate is honoured); a frame without
    a timestamp gets the previous time plus one nominal frame period.
    """
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"   # frame + slice threads: decode overlaps with the caller's work
        start = _stream_start(stream)
        rate = stream.average_rate or stream.guessed_rate
        period = 1.0 / float(rate) if rate else 0.04
        last = start - period
        try:
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base) if frame.pts is not None else last + period
                last = t
                yield t - start, frame
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path}: corrupt or truncated video ({exc})") from None


def iter_frames(path: str) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (time, HxWx3 uint8 RGB image) for every decoded frame."""
    for t, frame in decode_video(path):
        yield t, frame.to_ndarray(format="rgb24")


def frame_times(path: str) -> np.ndarray:
    """Timestamps (seconds from the video start) of every decoded frame: the rows of both stores."""
    return np.asarray([t for t, _ in decode_video(path)], dtype=np.float64)


def read_audio(path: str, sample_rate: int) -> tuple[np.ndarray, float]:
    """Mono float32 audio resampled to `sample_rate`, and the time (on the video clock) of sample 0.

    Returns an empty array when the file has no audio stream. Channels are averaged (mono mixdown).
    """
    with _open(path) as container:
        if not container.streams.audio:
            return np.zeros(0, dtype=np.float32), 0.0
        vstart = _stream_start(container.streams.video[0]) if container.streams.video else 0.0
        stream = container.streams.audio[0]
        # Resample in the track's own layout, then average the channels here: ffmpeg's downmix to
        # mono weights channels by 1/sqrt(2), not the plain mean that OpenL3 uses.
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        chunks, first = [], None
        try:
            for frame in container.decode(stream):
                if first is None and frame.pts is not None:
                    first = float(frame.pts * frame.time_base)
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().mean(axis=0))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().mean(axis=0))
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path}: corrupt or truncated audio ({exc})") from None
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    start = (first if first is not None else _stream_start(stream)) - vstart
    return samples, start
