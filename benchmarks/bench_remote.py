"""`dvc push` to and `dvc pull` from an S3 remote: how long the project's cache takes, in how many objects.

The remote is moto's S3 server on 127.0.0.1 (as in tests/test_s3.py), so the times are DVC's and the
loopback's, without a real network. The project (default: this checkout, after `dvc repro` and a commit)
is cloned with a copy of its cache; each repetition pushes the clone into a new bucket, checks
`dvc status -c`, and pulls into a fresh `git clone`. Results go to reports/bench_remote.json.

    .venv/bin/python benchmarks/bench_remote.py [--project DIR] [--reps 3] [--quick] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import boto3
import yaml
from moto.server import ThreadedMotoServer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KEY = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}


def dvc(*args: str, cwd: str) -> float:
    """Seconds `dvc <args>` took; it must succeed."""
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args)} failed in {cwd}:\n{proc.stderr}")
    return time.perf_counter() - began


def git(*args: str, cwd: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_size(directory: str) -> tuple[int, int]:
    files = [os.path.join(d, f) for d, _, names in os.walk(directory) for f in names]
    return len(files), sum(os.path.getsize(f) for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=REPO, help="a git + DVC project whose committed dvc.lock is in its cache")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", help="default: reports/bench_remote.json; --quick: a temporary directory")
    parser.add_argument("--quick", action="store_true", help="one repetition (a smoke check)")
    args = parser.parse_args()
    if args.quick:
        args.reps = 1
    args.out = args.out or (os.path.join(tempfile.gettempdir(), "avfusion-bench-quick", "bench_remote.json")
                            if args.quick else os.path.join(REPO, "reports", "bench_remote.json"))
    load_before = os.getloadavg()[0]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)      # moto's server logs every request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **KEY)
    runs = []
    try:
        with tempfile.TemporaryDirectory() as work:
            source = os.path.join(work, "source")
            git("clone", "-q", args.project, source, cwd=work)
            shutil.copytree(os.path.join(args.project, ".dvc", "cache"), os.path.join(source, ".dvc", "cache"))
            dvc("checkout", cwd=source)
            cache_files, cache_bytes = tree_size(os.path.join(source, ".dvc", "cache"))
            for rep in range(args.reps):
                bucket = f"bench-{rep}"
                s3.create_bucket(Bucket=bucket)
                remote = ["remote", "add", "-f", "-d", "--local", "team", f"s3://{bucket}/cache"]
                dvc(*remote, cwd=source)
                dvc("remote", "modify", "--local", "team", "endpointurl", endpoint, cwd=source)
                for option, value in KEY.items():
                    dvc("remote", "modify", "--local", "team", option.removeprefix("aws_"), value, cwd=source)
                push_s = dvc("push", cwd=source)
                again_s = dvc("push", cwd=source)                 # nothing left to send: the remote check alone
                status_s = dvc("status", "-c", cwd=source)
                objects = [o for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                           for o in page.get("Contents", [])]
                clone = os.path.join(work, f"clone-{rep}")
                git("clone", "-q", source, clone, cwd=work)
                shutil.copy(os.path.join(source, ".dvc", "config.local"), os.path.join(clone, ".dvc", "config.local"))
                pull_s = dvc("pull", cwd=clone)
                runs.append({"push_s": push_s, "push_again_s": again_s, "status_c_s": status_s, "pull_s": pull_s, "objects": len(objects),
                             "bytes": sum(o["Size"] for o in objects)})
                shutil.rmtree(clone)
                print(f"rep {rep}: push {push_s:.1f} s, again {again_s:.1f} s, status -c {status_s:.1f} s, pull {pull_s:.1f} s, "
                      f"{len(objects)} objects, {runs[-1]['bytes'] / 1e6:.1f} MB", file=sys.stderr)
    finally:
        server.stop()
    median = {key: statistics.median(run[key] for run in runs) for key in ("push_s", "push_again_s", "status_c_s", "pull_s")}
    with open(os.path.join(args.project, "params.yaml")) as f:
        demo = yaml.safe_load(f).get("demo")
    results = {"project": os.path.abspath(args.project), "demo": demo, "remote": "moto S3 server on 127.0.0.1",
               "cache_files": cache_files, "cache_bytes": cache_bytes, "objects": runs[0]["objects"],
               "bytes": runs[0]["bytes"], "median": median, "runs": runs, "cpus": os.cpu_count(),
               "load_before": load_before}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps({k: results[k] for k in ("objects", "bytes", "median")}))


if __name__ == "__main__":
    main()
