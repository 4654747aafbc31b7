"""Decoding video frames and audio with PyAV, with clear errors on bad media.

Every extractor uses the same clock: times are seconds relative to the start of the video stream,
so visual row t and audio row t describe the same instant (audio row t is centred on frame t).
"""
from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from avfusion.errors import MediaError


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
        # e.g. an mp4 cut short loses its index (moov atom) at the end: ffmpeg only says "invalid data"
        reason = getattr(exc, "strerror", None) or str(exc)
        raise MediaError(f"{path}: cannot be opened as a video (truncated, corrupt or not a media file: {reason})") from None


def _video_stream(container, path: str):
    if not container.streams.video:
        raise MediaError(f"{path}: no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None or stream.codec_context.name is None:
        tag = getattr(stream.codec_context, "codec_tag", "") if stream.codec_context is not None else ""
        raise MediaError(f"{path}: unsupported video codec{f' (tag {tag!r})' if tag else ''}: no decoder in this ffmpeg")
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


def _declared_duration(stream) -> float | None:
    """The video stream's own declared duration (mp4: stream header; mkv: the DURATION tag), if any."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    tag = (stream.metadata or {}).get("DURATION")
    try:
        h, m, s = tag.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    except (AttributeError, ValueError):
        return None


def _check_complete(path: str, stream, decoded: int, end: float, period: float) -> None:
    """A file cut short may decode without any error (mkv does): compare with what the header declares."""
    if decoded == 0:
        raise MediaError(f"{path}: no video frames could be decoded (empty or corrupt video stream)")
    declared = _declared_duration(stream)
    # Tolerance: containers and encoders disagree by a frame or two (edit lists, B-frame delay).
    if declared and declared - end > max(2 * period, 0.05 * declared):
        raise MediaError(f"{path}: truncated video: decoded {decoded} frames ({end:.2f} s) of "
                         f"{declared:.2f} s declared")
    if stream.frames and stream.frames - decoded > max(2, 0.05 * stream.frames):
        raise MediaError(f"{path}: truncated video: decoded {decoded} of {stream.frames} declared frames")


def decode_video(path: str) -> Iterator[tuple[float, av.VideoFrame]]:
    """Yield (time, frame) for every decoded frame, in presentation order.

    Times come from the frames' own timestamps (variable frame rate is honoured); a frame without
    a timestamp gets the previous time plus one nominal frame period. A video that decodes no frame or
    ends well before its declared length raises MediaError after the last frame, so callers that
    write rows only once the generator is exhausted never store a truncated video.
    """
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"   # frame + slice threads: decode overlaps with the caller's work
        start = _stream_start(stream)
        rate = stream.average_rate or stream.guessed_rate
        period = 1.0 / float(rate) if rate else 0.04
        last, decoded = start - period, 0
        try:
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base) if frame.pts is not None else last + period
                last, decoded = t, decoded + 1
                yield t - start, frame
        except av.error.FFmpegError as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise MediaError(f"{path}: corrupt or truncated video after {decoded} frames ({reason})") from None
        _check_complete(path, stream, decoded, last - start + period, period)


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


def prefetch(items: Iterator, depth: int) -> Iterator:
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
