"""Sharing cached features through DVC remotes: a local directory and a real SSH server on 127.0.0.1.

Clone A extracts once (the whole shrunken pipeline) and pushes; clone B is a real `git clone` of A
that pulls and runs a fusion experiment without running any extraction stage. One extracted
pipeline is shared by the session (conftest `extracted_pipeline`) to keep CI time down.
"""
import getpass
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import dvc, run, stages_run, tool_env

EXTRACTION = ("demo", "dataset", "facenet", "openl3", "extract@vad")


@pytest.fixture
def extracted(extracted_pipeline):
    """Clone A: the pipeline run once and committed (conftest, shared with the queue tests)."""
    return extracted_pipeline


def share_and_reuse(repo: str, name: str, url: str, clone: str, config=(), local_config=(), env=None) -> None:
    """Push from A to remote `name`, clone A into B, pull there and run an lfan experiment."""
    dvc("remote", "add", "-d", name, url, cwd=repo)
    for option, value in config:                       # shared settings (an S3 endpoint) are committed
        dvc("remote", "modify", name, option, value, cwd=repo)
    for option, value in local_config:                 # secrets stay out of git (.dvc/config.local)
        dvc("remote", "modify", "--local", name, option, value, cwd=repo)
    run(["git", "commit", "-qm", f"remote {name}", "--", ".dvc/config"], cwd=repo)

    push = dvc_env(env, "push", cwd=repo)
    assert re.search(r"\d+ files? pushed", push.stdout), push.stdout
    status = dvc_env(env, "status", "-c", cwd=repo)
    assert "Cache and remote" in status.stdout and "are in sync" in status.stdout, status.stdout

    run(["git", "clone", "-q", repo, clone], cwd=os.path.dirname(clone))
    for kind in ("facenet", "openl3"):                    # git carries only the .gitignore next to them
        assert not os.path.exists(os.path.join(clone, "data", "features", kind)), "features must come from the remote"
    for option, value in local_config:
        dvc("remote", "modify", "--local", name, option, value, cwd=clone)
    pull = dvc_env(env, "pull", cwd=clone)
    assert "fetched" in pull.stdout or "added" in pull.stdout, pull.stdout
    for kind in ("facenet", "openl3"):
        assert os.listdir(os.path.join(clone, "data", "features", kind)), f"{kind} stores not pulled"

    # Nothing is out of date after the pull ...
    assert json.loads(dvc("status", "--json", cwd=clone).stdout) == {}
    # ... so an experiment on another fusion type runs only train and evaluate.
    exp = dvc("exp", "run", "-S", "fusion.type=lfan", cwd=clone)
    assert stages_run(exp.stdout) == {"train", "evaluate"}, exp.stdout
    for stage in EXTRACTION:
        assert f"Running stage '{stage}'" not in exp.stdout
    table = json.dumps(json.loads(dvc("exp", "show", "--json", cwd=clone).stdout))
    assert '"lfan"' in table and "ccc_mean" in table


def dvc_env(env: dict | None, *args: str, cwd: str) -> subprocess.CompletedProcess:
    """dvc with extra environment variables (the SSH test points HOME at its own known_hosts)."""
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env={**tool_env(), **(env or {})},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_local_directory_remote_round_trip(extracted, tmp_path):
    share_and_reuse(extracted, "teamdir", str(tmp_path / "remote"), str(tmp_path / "b"))


# --- a real OpenSSH server on the loopback interface --------------------------------------------

def find_sshd() -> str | None:
    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def install_sshd() -> str | None:
    """CI starts from a fresh machine: install Debian's openssh-server when we are root."""
    if find_sshd() or os.geteuid() != 0 or not shutil.which("apt-get"):
        return find_sshd()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "openssh-server"]
    for attempt in ([install], [["apt-get", "update", "-q"], install]):   # package lists may be empty
        try:
            if all(subprocess.run(cmd, env=env, capture_output=True, timeout=300).returncode == 0
                   for cmd in attempt):
                break
        except subprocess.TimeoutExpired:
            return None
    return find_sshd()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, deadline_s: float = 20) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(4).startswith(b"SSH-"):     # the server's banner, not just an open socket
                    return True
        except OSError:
            time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory):
    """sshd on 127.0.0.1:<free port>, its own config and host key, key auth only; yields its details."""
    sshd = install_sshd()
    if not sshd:
        pytest.skip("sshd is not installed and cannot be installed here (needs root and apt-get)")
    root = tmp_path_factory.mktemp("sshd")
    for key in ("host", "client"):
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / key)], cwd=str(root))
    shutil.copy(root / "client.pub", root / "authorized_keys")
    port, user = free_port(), getpass.getuser()
    (root / "sshd_config").write_text(f"""\
ListenAddress 127.0.0.1
Port {port}
HostKey {root / 'host'}
PidFile {root / 'sshd.pid'}
AuthorizedKeysFile {root / 'authorized_keys'}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
LogLevel ERROR
""")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)       # Debian's privilege-separation directory
    log = open(root / "sshd.log", "w")
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(root / "sshd_config")], stdout=log, stderr=log)
    try:
        if not wait_for_port(port, proc):
            pytest.skip(f"sshd did not start: {(root / 'sshd.log').read_text()[-500:]}")
        # Verify the server for real: a known_hosts with its key, in a HOME of our own.
        home = root / "home"
        (home / ".ssh").mkdir(parents=True)
        host_key = (root / "host.pub").read_text().split()[:2]
        (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {' '.join(host_key)}\n")
        yield {"port": port, "user": user, "keyfile": str(root / "client"), "home": str(home)}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.mark.slow
def test_ssh_remote_round_trip(extracted, ssh_server, tmp_path):
    remote = tmp_path / "ssh-remote"
    url = f"ssh://{ssh_server['user']}@127.0.0.1:{ssh_server['port']}{remote}"
    share_and_reuse(extracted, "teamssh", url, str(tmp_path / "b"),
                    local_config=[("keyfile", ssh_server["keyfile"])], env={"HOME": ssh_server["home"]})
    assert any(remote.rglob("*")), "nothing arrived on the SSH server's disk"
