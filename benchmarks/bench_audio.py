"""Throughput of the OpenL3 port against the dense matmul throughput torch reaches on the same machine.

    python benchmarks/bench_audio.py [--repr mel128] [--windows 32] [--batch 32] [--quick] [--out PATH]

Both are measured in one run, interleaved, best of a few repetitions (a shared machine's load moves
both alike). Prints and writes reports/bench_audio.json. On CUDA the network runs as the stage runs
it (bf16 autocast, channels_last) and is compared with a bf16 matmul. `--quick`: a few windows, a
small matmul, one repetition (a smoke check, written to a temporary file unless --out is given).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from avfusion.openl3.frontend import FRONT_ENDS, SAMPLE_RATE
from avfusion.openl3.network import WINDOW, OpenL3
from avfusion.openl3.weights import load_model, write_random_weights


def network_flop(model: OpenL3) -> float:
    """FLOP of one window through the convolutions (2 per multiply-add; the rest is <1%)."""
    total = 0.0
    def count(conv, _, out):
        nonlocal total
        total += 2.0 * out[0].numel() * conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    hooks = [conv.register_forward_hook(count) for conv in model.convs]
    with torch.inference_mode():
        model(torch.zeros(1, WINDOW, device=model.input_scale.device))
    for hook in hooks:
        hook.remove()
    return total


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def seconds(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repr", default="mel128", choices=sorted(FRONT_ENDS))
    parser.add_argument("--windows", type=int, default=32, help="windows per timed run")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="4 windows, a small matmul, one repetition")
    parser.add_argument("--out", help="default: reports/bench_audio.json (--quick: a temporary file)")
    args = parser.parse_args()
    if args.quick:
        args.windows, args.repeats = 4, 1
    args.out = args.out or (os.path.join(tempfile.gettempdir(), "avfusion-bench-quick", "bench_audio.json")
                            if args.quick else os.path.join(REPO, "reports", "bench_audio.json"))

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "openl3.h5")
        write_random_weights(weights, args.repr, 512, seed=0)
        model = load_model(weights, args.repr, 512, device)
    flop = network_flop(model)
    audio = np.random.default_rng(0).normal(0, 0.1, args.windows * SAMPLE_RATE // 10 + WINDOW)
    centres = np.arange(args.windows) * SAMPLE_RATE // 10 + WINDOW // 2   # hop 0.1 s
    n = (1024 if args.quick else 4096) if device == "cpu" else 8192
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))

    def matmul():
        for _ in range(3 if device == "cpu" else 50):
            a @ b
    matmul_flop = 2.0 * n ** 3 * (3 if device == "cpu" else 50)

    def network():
        model.embed_centred(audio.astype(np.float32), centres, args.batch)

    matmul(), network()                            # warm-up: allocator, oneDNN/cuDNN kernel choice
    best_mm, best_net = 0.0, 0.0
    for _ in range(args.repeats):
        best_mm = max(best_mm, matmul_flop / seconds(matmul, device) / 1e9)
        best_net = max(best_net, flop * args.windows / seconds(network, device) / 1e9)
    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else cpu_name(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "input_repr": args.repr, "batch_size": args.batch, "windows": args.windows,
        "precision": "bf16" if device == "cuda" else "fp32",
        "gflop_per_window": round(flop / 1e9, 3),
        "matmul_gflops": round(best_mm, 1), "network_gflops": round(best_net, 1),
        "network_fraction_of_matmul": round(best_net / best_mm, 3),
        "windows_per_second": round(best_net * 1e9 / flop, 2),
    }
    print(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
