"""The input video with every tracked face drawn on it: box, person id, valence and arousal gauges.

Frames are decoded, drawn and re-encoded as H.264 at the input's size and timestamps (so its frame rate,
variable or not, is kept); the audio packets are copied unchanged when the output container takes their
codec, else re-encoded to AAC. Written to a temporary file beside the output and renamed at the end:
an error leaves no half-written video.
"""
from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

# A person's colour: Tableau 10, readable on both light and dark scenes; ids beyond 10 reuse colours.
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
COPY_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}   # codecs mp4/mov take as they are

Person = tuple[int, Sequence[float], float, float]   # (person id, box x1 y1 x2 y2 in pixels, valence, arousal)


def colour(person: int) -> tuple[int, int, int]:
    return PALETTE[person % len(PALETTE)]


def draw_people(image: Image.Image, people: Sequence[Person]) -> None:
    """Draw each person's box, id and gauges in place. Sizes follow the frame height (readable at 360p
    and 1080p); a NaN valence or arousal (no prediction) leaves its gauge empty."""
    unit = max(1.0, image.height / 360)
    line, bar_h, gap = max(2, round(unit)), round(6 * unit), round(2 * unit)
    font = ImageFont.load_default(size=round(11 * unit))
    small = ImageFont.load_default(size=round(8 * unit))
    draw = ImageDraw.Draw(image)
    letter_w = draw.textbbox((0, 0), "V", font=small)[2] + 2 * gap
    for person, box, valence, arousal in people:
        x1, y1, x2, y2 = (float(v) for v in box)
        col = colour(int(person))
        draw.rectangle([x1, y1, x2, y2], outline=col, width=line)
        label = f"{int(person)}"
        _, _, text_w, text_h = draw.textbbox((0, 0), label, font=font)
        tag_h = text_h + 2 * gap
        draw.rectangle([x1, y1 - tag_h, x1 + text_w + 2 * gap, y1], fill=col)
        draw.text((x1 + gap, y1 - tag_h + gap), label, fill=(255, 255, 255), font=font)
        # gauges as wide as the box (so side-by-side faces' gauges rarely overlap), with a floor for small faces
        right = x1 + max(x2 - x1, 40 * unit)
        top = y2 + gap
        draw.rectangle([x1, top, x1 + letter_w, top + 2 * bar_h + gap], fill=(20, 20, 20))
        for row, (name, value) in enumerate((("V", valence), ("A", arousal))):
            y = top + row * (bar_h + gap)
            _gauge(draw, (x1 + letter_w, y, right, y + bar_h), value, col)
            draw.text((x1 + letter_w / 2, y + bar_h / 2), name, fill=(255, 255, 255), font=small, anchor="mm")


def _gauge(draw: ImageDraw.ImageDraw, rect: tuple[float, float, float, float], value: float, col) -> None:
    """A bar over [-1, 1]: dark frame, a tick at 0, filled from 0 to the value."""
    x1, y1, x2, y2 = rect
    mid = (x1 + x2) / 2
    draw.rectangle(rect, fill=(20, 20, 20), outline=(230, 230, 230))
    if not math.isnan(value):
        end = mid + float(np.clip(value, -1, 1)) * (x2 - x1) / 2
        draw.rectangle([min(mid, end), y1 + 1, max(mid, end), y2 - 1], fill=col)
    draw.line([mid, y1, mid, y2], fill=(255, 255, 255))


def write_overlay(video_in: str, video_out: str, per_frame_people: Sequence[Sequence[Person]],
                  progress: bool = True) -> None:
    """Write `video_in` with `per_frame_people[f]` drawn on decoded frame f (frames past the end of
    the list stay undrawn) and its audio, to `video_out` (any container ffmpeg writes)."""
    folder, name = os.path.split(os.path.abspath(video_out))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=os.path.splitext(name)[1], dir=folder)
    os.close(fd)
    try:
        with av.open(video_in) as src, av.open(tmp, "w") as dst:
            _transcode(src, dst, per_frame_people, progress)
        os.replace(tmp, video_out)
    except BaseException:
        os.unlink(tmp)
        raise


def _transcode(src, dst, per_frame_people, progress: bool) -> None:
    vin = src.streams.video[0]
    vin.thread_type = "AUTO"
    vout = dst.add_stream("libx264", rate=vin.average_rate or vin.guessed_rate or 25)
    vout.width, vout.height = vin.width, vin.height
    vout.pix_fmt = "yuv420p" if vin.width % 2 == 0 and vin.height % 2 == 0 else "yuv444p"
    vout.codec_context.time_base = vin.time_base     # keep every frame's timestamp as it was
    vout.options = {"crf": "20", "preset": "veryfast"}
    streams, ain, aout = [vin], None, None
    if src.streams.audio:
        ain = src.streams.audio[0]
        streams.append(ain)
        copy = ain.codec_context.name in COPY_AUDIO
        # AAC needs a named layout (a file may say only "1 channels"); more than 2 channels mix to stereo
        layout = "mono" if ain.layout.nb_channels == 1 else "stereo"
        aout = dst.add_stream_from_template(ain) if copy else dst.add_stream("aac", rate=ain.rate, layout=layout)
    count = 0
    with tqdm(total=vin.frames or None, desc="overlay video", unit="frame", disable=not progress) as bar:
        for packet in src.demux(*streams):
            if packet.stream is ain:
                if not copy:
                    for frame in packet.decode():    # PyAV converts and re-chunks for the encoder
                        dst.mux(aout.encode(frame))
                elif packet.dts is not None:         # the demuxer's empty flush packet has none
                    packet.stream = aout
                    dst.mux(packet)
                continue
            for frame in packet.decode():
                image = frame.to_image()
                if count < len(per_frame_people):
                    draw_people(image, per_frame_people[count])
                out = av.VideoFrame.from_image(image)
                out.pts, out.time_base = frame.pts, frame.time_base
                dst.mux(vout.encode(out))
                count += 1
                bar.update()
        dst.mux(vout.encode())
        if aout is not None and not copy:
            dst.mux(aout.encode())

