"""The overlay video: a real H.264 + AAC video made here, drawn on, decoded back."""
from __future__ import annotations

import math
import os

import av
import numpy as np
import pytest
from PIL import Image

from avfusion.app.overlay import write_overlay
from avfusion.sources.demo import SAMPLE_RATE, write_video

WIDTH, HEIGHT, FPS, FRAMES = 320, 240, 10, 20


@pytest.fixture
def video(tmp_path) -> str:
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(np.full((HEIGHT, WIDTH, 3), (30 + 5 * i, 80, 120), np.uint8)) for i in range(FRAMES)]
    audio = (0.2 * np.sin(2 * np.pi * 220 * np.arange(FRAMES * SAMPLE_RATE // FPS) / SAMPLE_RATE)
             + 0.01 * rng.standard_normal(FRAMES * SAMPLE_RATE // FPS)).astype(np.float32)
    path = str(tmp_path / "in.mp4")
    write_video(path, frames, audio, FPS)
    return path


def decode(path: str) -> tuple[list[np.ndarray], int, float]:
    """RGB frames, audio samples decoded, and the audio stream's sample rate."""
    with av.open(path) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(path) as container:
        audio = container.streams.audio[0]
        samples = sum(f.samples for f in container.decode(audio))
        return frames, samples, audio.rate


BOX = (100, 60, 200, 160)


def people(frame: int) -> list:
    """Person 3 in every frame with moving valence and arousal; person 7 only in even frames."""
    out = [(3, BOX, math.sin(frame / 3), math.cos(frame / 3))]
    if frame % 2 == 0:
        out.append((7, (230, 20, 300, 90), -0.5, float("nan")))
    return out


def test_overlay_draws_boxes_and_keeps_frames_size_and_audio(tmp_path, video):
    out = str(tmp_path / "out.mp4")
    write_overlay(video, out, [people(f) for f in range(FRAMES)], progress=False)
    original, samples_in, rate_in = decode(video)
    drawn, samples_out, rate_out = decode(out)
    assert len(drawn) == len(original) == FRAMES
    assert drawn[0].shape == original[0].shape == (HEIGHT, WIDTH, 3)
    assert rate_out == rate_in and abs(samples_out - samples_in) <= 1024      # one AAC frame
    with av.open(out) as container:
        assert float(container.streams.video[0].average_rate) == FPS
    x1, y1, x2, y2 = BOX
    for f in (0, FRAMES - 1):
        diff = np.abs(drawn[f].astype(int) - original[f].astype(int)).sum(axis=2)
        # the box's left and right edges (2 px, drawn inward; 4:2:0 chroma blurs them)
        assert diff[(y1 + y2) // 2, x1 - 1:x1 + 2].max() > 60 and diff[y1 + 40, x2 - 2:x2 + 1].max() > 60
        assert diff[(y1 + y2) // 2, (x1 + x2) // 2] < 30        # inside the box: untouched
        assert diff[y2 + 2:y2 + 16, x1 + 30:x2].mean() > 50     # the gauges under the box
    assert sorted(os.listdir(tmp_path)) == ["in.mp4", "out.mp4"]    # no temporary file left


def test_frames_without_people_stay_as_they_were_and_audio_is_remuxed(tmp_path, video):
    out = str(tmp_path / "out.mkv")
    write_overlay(video, out, [[] for _ in range(FRAMES)], progress=False)
    original, _, _ = decode(video)
    drawn, _, _ = decode(out)
    assert len(drawn) == FRAMES
    assert max(np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(original, drawn)) < 3  # re-encoding only
    with av.open(video) as a, av.open(out) as b:
        assert b.streams.audio[0].codec_context.name == "aac"
        packets = lambda c: [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]   # noqa: E731
        assert packets(a) == packets(b)                                               # copied, not re-encoded


def test_error_leaves_no_partial_file(tmp_path, video):
    out = tmp_path / "out.mp4"
    with pytest.raises(TypeError):
        write_overlay(video, str(out), [[(0, BOX, "not a number", 0.0)]] * FRAMES, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["in.mp4"]


def test_audio_mp4_cannot_hold_is_reencoded_to_aac(tmp_path):
    """PCM audio (here in Matroska) has no place in mp4: it becomes AAC of the same length."""
    path = str(tmp_path / "in.mkv")
    samples = (0.3 * np.sin(2 * np.pi * 330 * np.arange(SAMPLE_RATE) / SAMPLE_RATE) * 32767).astype(np.int16)
    with av.open(path, "w") as out:
        vstream = out.add_stream("libx264", rate=FPS)
        vstream.width, vstream.height, vstream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        astream = out.add_stream("pcm_s16le", rate=SAMPLE_RATE, layout="mono")
        for i in range(FPS):
            out.mux(vstream.encode(av.VideoFrame.from_ndarray(np.full((HEIGHT, WIDTH, 3), 20 * i, np.uint8))))
        out.mux(vstream.encode())
        chunk = av.AudioFrame.from_ndarray(samples[None], format="s16", layout="mono")
        chunk.sample_rate, chunk.pts = SAMPLE_RATE, 0
        out.mux(astream.encode(chunk))
        out.mux(astream.encode())
    write_overlay(path, str(tmp_path / "out.mp4"), [[(0, BOX, 0.5, -0.5)]] * FPS, progress=False)
    drawn, samples_out, rate = decode(str(tmp_path / "out.mp4"))
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert container.streams.audio[0].codec_context.name == "aac"
    assert len(drawn) == FPS and rate == SAMPLE_RATE and abs(samples_out - SAMPLE_RATE) <= 1024
