"""`avfusion pull`: `dvc pull`, and when the DVC remote cannot give every object, one line naming the files.

DVC's own failure names object hashes, one line each ("failed to transfer '<md5>' ..."), then counts
files. Its pull fetches before it checks out and stops when the fetch fails, so the workspace is left
as it was; after that fetch the files still absent from the local cache (`dvc status -c`) are exactly
the ones the remote could not give.
"""
from __future__ import annotations

import json
import subprocess
import sys

from avfusion.errors import UserError


class RemoteError(UserError):
    """A DVC remote that cannot give what the project's dvc.lock names."""


def dvc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)


def first_error(proc: subprocess.CompletedProcess) -> str:
    lines = [line.removeprefix("ERROR:").strip() for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    return lines[0] if lines else f"dvc exited with {proc.returncode}"


def pull(remote: str | None = None) -> str:
    """`dvc pull` in the current directory's project; returns DVC's summary, or raises RemoteError."""
    chosen = ["-r", remote] if remote else []
    proc = dvc("pull", *chosen)
    if proc.returncode == 0:
        return proc.stdout.strip()
    status = dvc("status", "-c", "--json", *chosen)
    if status.returncode != 0:            # unreachable remote, no credentials: DVC's reason
        raise RemoteError(first_error(proc))
    lacking = sorted(path for path, state in json.loads(status.stdout or "{}").items() if state != "new")
    if not lacking:
        raise RemoteError(first_error(proc))
    raise RemoteError(f"the DVC remote did not give {len(lacking)} files, so nothing was checked out: "
                      f"{', '.join(lacking)} (`dvc push` them from a clone that has them)")
