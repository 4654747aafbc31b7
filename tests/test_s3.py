"""Issue 24: features shared through a real S3 remote: moto's S3 server on 127.0.0.1, which checks every
request's signature against access keys of its own IAM, so a clone without the team's key is refused.

The key lives only in .dvc/config.local; a push killed partway and run again loses nothing; a pull from a
bucket that lost objects checks out nothing and `avfusion pull` names the files in one line. Each test
works in a private copy of the session's extracted pipeline (conftest) and a bucket of its own.
"""
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

import boto3
import botocore.exceptions
import pytest
import yaml
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from test_interrupt import kill_when
from test_remote import share_and_reuse
from werkzeug.serving import make_server

from conftest import dvc, run, tool_env, tree_digest

REGION = "us-east-1"


class QuietHandler(MotoRequestHandler):
    def log_request(self, *args) -> None:   # a line per request would bury a failing test's output
        pass


class S3Server:
    """moto's S3 and IAM in a thread of this process, on a free port of 127.0.0.1. `put_delay` seconds
    of sleep before each PUT (an object or a part of one) make a push slow enough to kill partway."""

    def __init__(self):
        self.put_delay = 0.0
        app = DomainDispatcherApplication(create_backend_app)

        def throttled(environ, start_response):
            if environ["REQUEST_METHOD"] == "PUT" and self.put_delay:
                time.sleep(self.put_delay)
            return app(environ, start_response)

        self.server = make_server("127.0.0.1", 0, throttled, threaded=True, request_handler=QuietHandler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def client(self, service: str, key_id: str, secret: str):
        return boto3.client(service, endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id=key_id, aws_secret_access_key=secret)

    def require_signatures(self, count: str) -> None:
        """From now on ("0") every request must be signed by a key of moto's IAM; "inf" turns that off."""
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset-auth", data=count.encode(),
                                                      headers={"Content-Type": "text/plain"}))

    def bucket(self, name: str) -> str:
        """A new bucket; returns the DVC remote URL of a folder in it."""
        self.s3.create_bucket(Bucket=name)
        return f"s3://{name}/cache"

    def keys(self, bucket: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture(scope="module")
def s3():
    """The server, with an IAM user `team` allowed s3:* whose key is `s3.key_id` / `s3.secret`; then
    signatures are required. `s3.credentials` are the options `dvc remote modify --local` takes."""
    server = S3Server()
    try:
        iam = server.client("iam", "bootstrap", "bootstrap")     # before signatures are required
        iam.create_user(UserName="team")
        iam.put_user_policy(UserName="team", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="team")["AccessKey"]
        server.key_id, server.secret = key["AccessKeyId"], key["SecretAccessKey"]
        server.credentials = [("access_key_id", server.key_id), ("secret_access_key", server.secret)]
        server.s3 = server.client("s3", server.key_id, server.secret)
        server.require_signatures("0")
        yield server
    finally:
        server.require_signatures("inf")        # moto's settings and backends live in this process
        urllib.request.urlopen(urllib.request.Request(f"{server.url}/moto-api/reset", data=b""))
        server.server.shutdown()


def add_s3_remote(repo: str, s3: S3Server, bucket: str) -> None:
    """`team`, the default remote: its URL and endpoint committed, the key in .dvc/config.local."""
    dvc("remote", "add", "-d", "team", s3.bucket(bucket), cwd=repo)
    dvc("remote", "modify", "team", "endpointurl", s3.url, cwd=repo)
    run(["git", "commit", "-qm", "team S3 remote", "--", ".dvc/config"], cwd=repo)
    give_credentials(repo, s3)


def give_credentials(repo: str, s3: S3Server) -> None:
    for option, value in s3.credentials:
        dvc("remote", "modify", "--local", "team", option, value, cwd=repo)


def assert_credentials_only_local(repo: str, s3: S3Server, git_dir: str | None = None) -> None:
    """The key is in .dvc/config.local (git-ignored) and in no tracked file, commit or ref (experiments too)."""
    if git_dir is None:
        assert s3.key_id in open(os.path.join(repo, ".dvc", "config.local")).read()
        run(["git", "check-ignore", "-q", ".dvc/config.local"], cwd=repo)
        assert run(["git", "grep", "-qF", "-e", s3.key_id, "-e", s3.secret], cwd=repo, check=False).returncode == 1
    git = ["git", f"--git-dir={git_dir or os.path.join(repo, '.git')}"]
    revs = run([*git, "rev-list", "--all"], cwd=repo).stdout.split()
    assert revs
    found = run([*git, "grep", "-qF", "-e", s3.key_id, "-e", s3.secret, *revs], cwd=repo, check=False)
    assert found.returncode == 1, f"the S3 key reached git history: {found.stdout}{found.stderr}"


def pushed_in_sync(repo: str) -> None:
    status = dvc("status", "-c", cwd=repo)
    assert "Cache and remote 'team' are in sync" in status.stdout, status.stdout


def clone_and_pull(source: str, clone: str, s3: S3Server) -> None:
    run(["git", "clone", "-q", source, clone], cwd=os.path.dirname(clone))
    give_credentials(clone, s3)
    dvc("pull", cwd=clone)


def cached_outs(repo: str) -> list[str]:
    """The outputs dvc.lock names that DVC caches (the others are tracked by git)."""
    with open(os.path.join(repo, "dvc.lock")) as f:
        stages = yaml.safe_load(f)["stages"]
    tracked = set(run(["git", "ls-files"], cwd=repo).stdout.split())
    return sorted(out["path"] for stage in stages.values() for out in stage.get("outs", []) if out["path"] not in tracked)


def out_files(repo: str) -> dict[str, str]:
    """MD5 (DVC's object name) of every file of the cached outputs, by path."""
    paths = []
    for out in cached_outs(repo):
        full = os.path.join(repo, out)
        paths += [os.path.join(out, rel) for rel in tree_digest(full)] if os.path.isdir(full) else [out]
    return {path: hashlib.md5(open(os.path.join(repo, path), "rb").read()).hexdigest() for path in paths}


def workspace(repo: str) -> dict[str, str]:
    """SHA-256 of every file outside git's and DVC's own folders: what a user sees."""
    return {path: digest for path, digest in tree_digest(repo).items()
            if not path.startswith((".git" + os.sep, os.path.join(".dvc", "cache") + os.sep,
                                    os.path.join(".dvc", "tmp") + os.sep))}


def test_the_server_keeps_objects_and_refuses_unknown_keys(s3):
    s3.bucket("signatures")
    s3.s3.put_object(Bucket="signatures", Key="a/b", Body=b"features")
    assert s3.keys("signatures") == ["a/b"]
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidAccessKeyId"):
        s3.client("s3", "AKIA" + "0" * 16, "not-the-secret").list_objects_v2(Bucket="signatures")


@pytest.mark.slow
def test_s3_round_trip_with_the_key_only_in_config_local(pipeline_copy, s3, tmp_path):
    """Push after `dvc repro`, a fresh clone pulls (status clean) and an lfan experiment runs only train and
    evaluate (test_remote.share_and_reuse); without the key a clone is refused; no commit holds it."""
    clone = str(tmp_path / "b")
    share_and_reuse(pipeline_copy, "team", s3.bucket("round-trip"), clone,
                    config=[("endpointurl", s3.url)], local_config=s3.credentials)
    assert s3.keys("round-trip"), "nothing arrived in the bucket"
    for repo in (pipeline_copy, clone):
        assert_credentials_only_local(repo, s3)

    keyless = str(tmp_path / "keyless")
    run(["git", "clone", "-q", pipeline_copy, keyless], cwd=str(tmp_path))
    no_aws = {k: v for k, v in tool_env().items() if not k.startswith("AWS_")}
    no_aws["HOME"] = str(tmp_path)                      # nor a ~/.aws
    refused = run([sys.executable, "-m", "dvc", "pull"], cwd=keyless, check=False, env=no_aws)
    assert refused.returncode != 0 and "Unable to locate credentials" in refused.stderr, refused.stderr
    assert not os.path.exists(os.path.join(keyless, "data", "features", "facenet"))


@pytest.mark.slow
def test_push_killed_partway_then_run_again_loses_nothing(pipeline_copy, s3, tmp_path):
    repo = pipeline_copy
    add_s3_remote(repo, s3, "interrupted")
    s3.put_delay = 0.3
    try:
        push = subprocess.Popen([sys.executable, "-m", "dvc", "push"], cwd=repo, env=tool_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        kill_when(push, lambda: len(s3.keys("interrupted")) >= 5, "5 objects in the bucket")
    finally:
        s3.put_delay = 0.0
    partial = len(s3.keys("interrupted"))

    again = dvc("push", cwd=repo)
    assert re.search(r"\d+ files? pushed", again.stdout), again.stdout
    pushed_in_sync(repo)
    assert partial < len(s3.keys("interrupted")), "the killed push had already finished"

    clone = str(tmp_path / "b")
    clone_and_pull(repo, clone, s3)
    for out in cached_outs(repo):
        source, pulled = os.path.join(repo, out), os.path.join(clone, out)
        if os.path.isdir(source):
            assert tree_digest(pulled) == tree_digest(source), f"{out} differs after the pull"
        else:
            assert open(pulled, "rb").read() == open(source, "rb").read(), f"{out} differs after the pull"
    assert "up to date" in dvc("status", cwd=clone).stdout


@pytest.mark.slow
def test_pull_from_a_bucket_missing_objects_names_the_files_and_checks_out_nothing(pipeline_copy, s3, tmp_path):
    repo = pipeline_copy
    add_s3_remote(repo, s3, "lacking")
    dvc("push", cwd=repo)
    # Delete three file objects whose content only one file has (dvc status names one file per object).
    files = out_files(repo)
    holders = {}
    for path, md5 in files.items():
        holders.setdefault(md5, []).append(path)
    unique = sorted(md5 for md5, paths in holders.items() if len(paths) == 1)
    lost = unique[:: max(1, len(unique) // 3)][:3]
    for md5 in lost:
        s3.s3.delete_object(Bucket="lacking", Key=f"cache/files/md5/{md5[:2]}/{md5[2:]}")
    lost_files = sorted(holders[md5][0] for md5 in lost)

    clone = str(tmp_path / "b")
    run(["git", "clone", "-q", repo, clone], cwd=str(tmp_path))
    give_credentials(clone, s3)
    before = workspace(clone)

    # DVC itself: the pull fails, names each missing object's hash, and checks out nothing.
    own = dvc("pull", cwd=clone, check=False)
    assert own.returncode != 0, own.stdout
    for md5 in lost:
        assert md5 in own.stderr, own.stderr
    assert workspace(clone) == before

    # avfusion pull: the same, in one line naming the files.
    ours = run([sys.executable, "-m", "avfusion.app.cli", "pull"], cwd=clone, check=False)
    assert ours.returncode == 1, ours.stdout + ours.stderr
    lines = ours.stderr.strip().splitlines()
    assert len(lines) == 1, ours.stderr
    assert lines[0].startswith("avfusion pull: error: the DVC remote did not give 3 files, so nothing was checked out")
    assert lines[0] == ("avfusion pull: error: the DVC remote did not give 3 files, so nothing was checked out: "
                        f"{', '.join(lost_files)} (`dvc push` them from a clone that has them)")
    assert workspace(clone) == before
