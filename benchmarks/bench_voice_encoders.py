"""Speed of the voice encoders of issue 22 (speech: wavlm-base-plus, wav2vec2-base, hubert-base, the
audEERING emotion model; vggish; mfcc with deltas; egemaps functionals) on a real 1080p clip, each as
its stage runs it per video (`rows`: audio decoding included; the frame times come from the dataset
stage, as in the pipeline).

    python benchmarks/bench_voice_encoders.py [--video PATH] [--reps 3] [--threads 2] [--device cpu]

PATH defaults to $AVFUSION_MEDIA/street_crowd_1080p25.mp4. The speech models run on seeded random
weights of the official sizes (12 layers of 768, or of 1024 for the emotion model): the same arithmetic
as the downloaded ones. Frames/s is video frames per wall second; CPU s per frame is the process's CPU
time (all threads) per frame. Repetitions alternate the encoders (a shared machine's load hits all
alike); medians. Writes reports/voice_encoders.json and reports/voice_encoders.md. On a GPU machine:

    python benchmarks/bench_voice_encoders.py --device cuda --threads 16
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TQDM_DISABLE", "1")
HERE = os.path.dirname(os.path.abspath(__file__))
# real clips are not in the repository: a folder of them is named by AVFUSION_MEDIA or each script's option
STREET = os.path.join(os.environ["AVFUSION_MEDIA"], "street_crowd_1080p25.mp4") if "AVFUSION_MEDIA" in os.environ else ""
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO]

import numpy as np
import torch

from avfusion.extraction.base import Video
from avfusion.extraction.registry import get
from avfusion.params import validate
from avfusion.sources.media import frame_times, probe

SPEECH = {"wavlm-base-plus": {}, "wav2vec2-base": {}, "hubert-base": {},
          "wav2vec2-large-robust-12-ft-emotion-msp-dim": "LARGE"}
GPU_COMMAND = "python benchmarks/bench_voice_encoders.py --device cuda --threads 16"


def build(name: str, settings: dict, device: str, directory: str):
    cls = get(name)
    params = validate(name, settings)
    extractor = cls(params, device)
    extractor.weights_dir = directory
    os.makedirs(directory, exist_ok=True)
    return extractor, params


def encoders(device: str, tmp: str) -> dict:
    from avfusion.extractors import speech
    out = {}
    for model, size in SPEECH.items():
        directory = os.path.join(tmp, model)
        os.makedirs(directory)
        speech.write_random_weights(directory, model, 0, speech.LARGE if size == "LARGE" else size)
        extractor, _ = build("speech", {"model": model, "weights": "official", "device": device}, device, directory)
        out[f"speech:{model}"] = extractor
    for name, settings in (("vggish", {"rate": 5}), ("vggish", {"rate": 0}), ("mfcc", {"deltas": True}),
                           ("egemaps", {"set": "functionals"})):
        directory = os.path.join(tmp, f"{name}-{len(out)}")
        extractor, params = build(name, {**settings, **({"device": device} if name == "vggish" else {})}, device, directory)
        get(name).make_weights(params, directory)
        out[f"{name}:" + ",".join(f"{k}={v}" for k, v in settings.items())] = extractor
    for extractor in out.values():
        extractor.load()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=STREET, help="a real 1080p clip with sound")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="path stem for .json and .md (default: reports/voice_encoders; "
                        "--quick: a temporary directory)")
    parser.add_argument("--quick", action="store_true", help="one repetition (a smoke check)")
    args = parser.parse_args()
    if args.quick:
        args.reps = 1
    args.out = args.out or (os.path.join(tempfile.gettempdir(), "avfusion-bench-quick", "voice_encoders")
                            if args.quick else os.path.join(REPO, "reports", "voice_encoders"))
    if not os.path.isfile(args.video):
        print(f"skipped: --video {args.video} is not a file (a real 1080p clip with sound: give --video or set AVFUSION_MEDIA)")
        return
    torch.set_num_threads(args.threads)
    info = probe(args.video)
    video = Video(id="clip", path=args.video, times=frame_times(args.video))
    frames = len(video.times)
    load_before = os.getloadavg()
    samples: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        built = encoders(args.device, tmp)
        for extractor in built.values():       # warm-up: allocations, kernel choice, openSMILE start
            extractor.rows(video)
        for _ in range(args.reps):
            for name, extractor in built.items():
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                wall, cpu = time.perf_counter(), time.process_time()
                rows = extractor.rows(video)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                samples.setdefault(name, []).append((time.perf_counter() - wall, time.process_time() - cpu))
                assert len(rows["time"]) == frames and np.isfinite(rows["embedding"]).all()
        dims = {name: extractor.dim for name, extractor in built.items()}
    result = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "video": {"path": os.path.basename(args.video), "width": info.width, "height": info.height,
                  "fps": info.fps, "frames": frames, "seconds": round(frames / info.fps, 3)},
        "machine": {"cpu": platform.processor() or platform.machine(), "torch_threads": args.threads,
                    "device": args.device, "load_before": [round(x, 2) for x in load_before],
                    "load_after": [round(x, 2) for x in os.getloadavg()]},
        "reps": args.reps,
        "encoders": {name: {"columns": dims[name],
                            "frames_per_s": round(frames / statistics.median(w for w, _ in runs), 2),
                            "cpu_seconds_per_frame": round(statistics.median(c for _, c in runs) / frames, 5),
                            "wall_seconds": [round(w, 3) for w, _ in runs]}
                     for name, runs in samples.items()},
        "note": "speech models on seeded random weights of the official sizes; rows() of one video, audio decoding "
                "included, frame times given (the dataset stage's)",
        "gpu_command": GPU_COMMAND,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    lines = [f"# Voice encoders: speed on {result['video']['path']} ({info.width}x{info.height}, {frames} frames, "
             f"{result['video']['seconds']} s)", "",
             f"{args.device}, {args.threads} torch threads, load average {result['machine']['load_before']} before, "
             f"{result['machine']['load_after']} after; median of {args.reps} runs. {result['note']}.", "",
             "| encoder | columns | frames/s | CPU s per frame |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {r['columns']} | {r['frames_per_s']} | {r['cpu_seconds_per_frame']} |"
              for name, r in result["encoders"].items()]
    lines += ["", f"On a GPU: `{GPU_COMMAND}`", ""]
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
