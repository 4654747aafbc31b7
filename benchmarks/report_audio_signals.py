"""The speech and prosody signals of real clips, drawn: waveform, `vad` speech probability, eGeMAPS pitch
and loudness over time, per clip, into reports/audio_signals.png; speech fractions into reports/bench.json.

    python benchmarks/report_audio_signals.py [--media DIR] [--demo-videos 3] [--quick] [--out PNG] [--report JSON]

Clips: street_crowd_1080p25.mp4 and mouth_crop_96px_16khz.mp4 under --media (default $AVFUSION_MEDIA;
a missing clip is skipped with a message), plus demo videos made here with the
project's params (avfusion/sources/demo.py): their voice is synthetic, not speech, so the report says
whether vad takes it for speech. Values come from the project's own extractors (avfusion/extractors/vad.py
and egemaps.py, one row per decoded frame, given the frame times as the dataset stage stores them), so
the figure shows exactly what the stores hold. The speech fraction is the share of frames inside the
audio whose speech probability reaches `openl3.vad_threshold` (the threshold of `openl3.valid_from:
vad`). Needs the opensmile extra. `--quick`: one demo video, figure and report into a temporary
directory unless --out / --report are given.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]

from bench import load, merge_into_report, params

from avfusion.extraction.base import Video
from avfusion.extraction.framewise import SAMPLE_RATE
from avfusion.extractors.egemaps import EGeMAPSExtractor
from avfusion.extractors.vad import VadExtractor
from avfusion.sources.demo import make_video
from avfusion.sources.media import frame_times, read_audio

CLIPS = ("street_crowd_1080p25.mp4", "mouth_crop_96px_16khz.mp4")
PITCH, LOUDNESS = "F0semitoneFrom27.5Hz_sma3nz", "Loudness_sma3"


def signals(path: str, vad: VadExtractor, egemaps: EGeMAPSExtractor, threshold: float) -> dict:
    """Waveform and the per-frame vad / pitch / loudness rows of one video."""
    samples, start = read_audio(path, SAMPLE_RATE)
    video = Video(os.path.basename(path), path, frame_times(path))
    speech = vad.rows(video)
    prosody = egemaps.rows(video)
    inside = speech["valid"]
    prob = speech["embedding"][:, 0]
    return {"samples": samples, "start": start, "time": speech["time"], "inside": inside, "speech": prob,
            "pitch": prosody["embedding"][:, egemaps.names.index(PITCH)],
            "loudness": prosody["embedding"][:, egemaps.names.index(LOUDNESS)],
            "speech_fraction": float((prob[inside] >= threshold).mean()) if inside.any() else 0.0,
            "mean_speech_probability": float(prob[inside].mean()) if inside.any() else 0.0,
            "frames": int(len(prob)), "frames_in_audio": int(inside.sum()),
            "voiced_fraction": float((prosody["embedding"][inside, egemaps.names.index(PITCH)] > 0).mean())
            if inside.any() else 0.0}


def draw(results: dict[str, dict], threshold: float, out: str) -> None:
    """One column per clip: waveform, speech probability, pitch (voiced frames only), loudness."""
    fig, axes = plt.subplots(4, len(results), figsize=(5.5 * len(results), 10), sharex="col", squeeze=False)
    for col, (name, s) in enumerate(results.items()):
        wave, vad, pitch, loud = axes[:, col]
        t = s["start"] + np.arange(len(s["samples"])) / SAMPLE_RATE
        wave.plot(t, s["samples"], lw=0.3, color="0.3")
        wave.set_title(f"{name}\nspeech in {s['speech_fraction']:.0%} of frames (vad >= {threshold:g})", fontsize=10)
        vad.plot(s["time"], s["speech"], color="tab:blue")
        vad.axhline(threshold, color="tab:red", lw=0.8, ls="--")
        vad.fill_between(s["time"], 0, 1, where=~s["inside"], color="0.85", step="mid", label="outside the audio")
        vad.set_ylim(-0.02, 1.02)
        voiced = np.where(s["pitch"] > 0, s["pitch"], np.nan)      # 0 = unvoiced (openSMILE's convention)
        pitch.plot(s["time"], voiced, ".", ms=3, color="tab:green")
        if np.isnan(voiced).all():
            pitch.text(0.5, 0.5, "no voiced frame", transform=pitch.transAxes, ha="center", va="center")
        loud.plot(s["time"], s["loudness"], color="tab:orange")
        loud.set_xlabel("time (s)")
        if col == 0:
            wave.set_ylabel("waveform\n(16 kHz)")
            vad.set_ylabel("vad speech\nprobability")
            pitch.set_ylabel("eGeMAPS F0\n(semitones from 27.5 Hz)")
            loud.set_ylabel("eGeMAPS loudness\n(auditory spectrum)")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
    axes[0, 0].figure.suptitle("Speech and prosody per video frame (avfusion extractors vad, egemaps)", fontsize=12)
    fig.tight_layout()
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", default=os.environ.get("AVFUSION_MEDIA", ""),
                        help="folder holding the real clips (default: $AVFUSION_MEDIA)")
    parser.add_argument("--demo-videos", type=int, default=3, help="demo videos to make and measure (0: none)")
    parser.add_argument("--quick", action="store_true", help="one demo video, into a temporary directory")
    parser.add_argument("--out", help="the figure (default: reports/audio_signals.png)")
    parser.add_argument("--report", help="the JSON report to merge into (default: reports/bench.json)")
    args = parser.parse_args()
    reports = os.path.join(tempfile.gettempdir(), "avfusion-bench-quick") if args.quick else os.path.join(REPO, "reports")
    if args.quick:
        args.demo_videos = 1
    args.out = args.out or os.path.join(reports, "audio_signals.png")
    args.report = args.report or os.path.join(reports, "bench.json")
    reason = EGeMAPSExtractor.available()
    if reason:
        print(f"report_audio_signals: skipped: {reason}")
        return

    threshold = params("openl3")["vad_threshold"]
    vad, egemaps = VadExtractor(params("vad"), "cpu"), EGeMAPSExtractor(params("egemaps"), "cpu")
    results, load_before = {}, load()
    for clip in CLIPS:
        path = os.path.join(args.media, clip)
        if not os.path.isfile(path):
            print(f"skipped {clip}: {path} not found")
            continue
        results[clip] = signals(path, vad, egemaps, threshold)
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "videos"))
        os.makedirs(os.path.join(tmp, "labels"))
        for index in range(args.demo_videos):
            video_id, _ = make_video(index, params("demo"), tmp)
            results[f"{video_id} (demo voice)"] = signals(os.path.join(tmp, "videos", f"{video_id}.mp4"),
                                                          vad, egemaps, threshold)
    if not results:
        print("nothing to draw")
        return
    shown = {name: s for name, s in results.items() if "demo" not in name or name.startswith("demo-02")}
    draw(shown, threshold, args.out)
    summary = {name: {k: round(v, 3) if isinstance(v, float) else v for k, v in s.items()
                      if k in ("speech_fraction", "mean_speech_probability", "voiced_fraction", "frames",
                               "frames_in_audio")} for name, s in results.items()}
    report = {"threshold": threshold, "definition": "share of frames inside the audio with vad speech "
              "probability >= threshold (openl3.vad_threshold); voiced = eGeMAPS F0 > 0",
              "clips": summary, "figure": os.path.relpath(args.out, REPO) if args.out.startswith(REPO) else args.out,
              "load_before": load_before,
              "load_after": load()}
    merge_into_report(args.report, "audio_signals", report)
    for name, s in summary.items():
        print(f"{name}: speech in {s['speech_fraction']:.1%} of frames (mean p {s['mean_speech_probability']:.2f}), "
              f"voiced {s['voiced_fraction']:.1%}")
    print(f"wrote {args.out} and the audio_signals key of {args.report}")


if __name__ == "__main__":
    main()
