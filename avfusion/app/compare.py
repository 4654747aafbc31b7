"""`avfusion compare A B`: is one experiment's test CCC better than another's, beyond the videos' luck?

A and B are revisions of the project: experiment names from `dvc exp show`, commits, branches or tags.
Each revision's evaluate stage recorded, per test video, the six moments of its prediction against the
labels (reports/test_videos.json, avfusion/learning/evaluate.py `moments_record`); the paired
bootstrap draws the same videos for both, recomputes each one's official pooled CCC on the drawn
videos, and reports the 95% interval of the difference (avfusion/learning/metrics.py). A difference
whose interval holds zero is not one this test set can tell apart from chance.
"""
from __future__ import annotations

import json
import subprocess

import numpy as np

from avfusion import paths
from avfusion.errors import UserError
from avfusion.learning.metrics import paired_difference

RECORD = "reports/test_videos.json"


class CompareError(UserError):
    """Two revisions that cannot be compared: unknown, not evaluated, or scored on other videos."""


def resolve(rev: str, root: str) -> str:
    """The commit of an experiment name, commit, branch or tag (DVC's own resolution)."""
    from dvc.scm import SCM, RevError, resolve_rev
    try:
        return resolve_rev(SCM(root), rev)
    except RevError:
        raise CompareError(f"{rev}: not an experiment (dvc exp show), commit, branch or tag of {root}") from None


def read_record(rev: str, root: str) -> tuple[str, dict]:
    """(commit, the per-video moments the evaluate stage recorded at that revision)."""
    commit = resolve(rev, root)
    shown = subprocess.run(["git", "show", f"{commit}:./{RECORD}"], cwd=root, capture_output=True, text=True)
    if shown.returncode != 0:
        raise CompareError(f"{rev}: has no {RECORD} (evaluated before `avfusion compare` existed, or never)")
    return commit, json.loads(shown.stdout)["videos"]


def paired_moments(a: dict, b: dict, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """[V, 2, 6] each, in one video order, after checking both scored the same videos and labels."""
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        raise CompareError(f"{names[0]} and {names[1]} were evaluated on different test videos "
                           f"({len(a)} and {len(b)}; e.g. {only[0]} is in one only)")
    changed = [v for v in sorted(a) if a[v]["labels_sha256"] != b[v]["labels_sha256"]]
    if changed:
        raise CompareError(f"{names[0]} and {names[1]} scored test video {changed[0]} against different labels")
    if not a:
        raise CompareError(f"{names[0]} and {names[1]} have no labelled test videos")
    videos = sorted(a)
    return tuple(np.array([[r[v]["valence"], r[v]["arousal"]] for v in videos]) for r in (a, b))


def compare(rev_a: str, rev_b: str, resamples: int = 1000, seed: int = 0, root: str | None = None) -> dict:
    """{"videos", "commits", and per dimension (valence, arousal, mean): (A - B, low, high)}."""
    if resamples < 1:
        raise CompareError(f"--resamples must be >= 1, not {resamples}")
    root = root or paths.root()
    (commit_a, a), (commit_b, b) = read_record(rev_a, root), read_record(rev_b, root)
    moments_a, moments_b = paired_moments(a, b, (rev_a, rev_b))
    return {"videos": len(moments_a), "commits": (commit_a, commit_b),
            **paired_difference(moments_a, moments_b, resamples, seed)}


def report(rev_a: str, rev_b: str, result: dict, resamples: int, seed: int) -> str:
    a, b = result["commits"]
    videos = f"{result['videos']} test video" + ("s" if result["videos"] != 1 else "")
    lines = [f"test CCC of {rev_a} ({a[:7]}) minus {rev_b} ({b[:7]}) on {videos}, "
             f"95% paired bootstrap interval over videos ({resamples} resamples, seed {seed}):"]
    for name in ("valence", "arousal", "mean"):
        difference, low, high = result[name]
        verdict = "excludes 0: a difference" if low > 0 or high < 0 else "includes 0: no clear difference"
        lines.append(f"  {name:<8} {difference:+.4f}  [{low:+.4f}, {high:+.4f}]  {verdict}")
    return "\n".join(lines)
