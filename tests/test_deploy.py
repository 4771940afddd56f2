"""deploy.sh and cloudbuild.yaml, checked without a cloud: a dry run, a fake ``gcloud``
that records its calls, shellcheck, and the staged source served by functions-framework
from a fresh virtualenv."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from functions import tokens
from tests.emulator import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy.sh"
# name: (memory, concurrency, timeout)
SIZES = {"openai": ("2Gi", "40", "900s"), "admin": ("512Mi", "8", "120s"),
         "log": ("512Mi", "16", "60s")}
APIS = ("cloudfunctions", "run", "cloudbuild", "artifactregistry", "firestore",
        "secretmanager", "iam", "logging")
EXT = 'resource.name.startsWith("projects/{}/secrets/tollgate-ext-")'

# FAKE_MODE: "forbidden" (a dry run: any call fails), "empty" (nothing exists, creates
# succeed), "full" (everything exists), "racy" (checks see nothing, creates ALREADY_EXISTS).
FAKE_GCLOUD = r'''#!/usr/bin/env python3
import json, os, sys
args = sys.argv[1:]
stdin = sys.stdin.read() if "--data-file=-" in args else None
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps({"argv": args, "stdin": stdin}) + "\n")
mode = os.environ["FAKE_MODE"]
if mode == "forbidden":
    sys.exit("fake gcloud: a dry run called gcloud")
words = [a for a in args if not a.startswith("-")]
full = mode == "full"
if words[:2] == ["projects", "describe"]:
    print("123456789012")
elif words[:2] == ["functions", "describe"]:
    print(f"https://{words[2]}-abc123-ew.a.run.app")
elif words[-1] == "list" and "indexes" in words:
    with open(os.environ["FAKE_INDEXES"]) as f:
        wanted = json.load(f)["indexes"] if full else []
    print(json.dumps([{"name": f"projects/p/databases/tollgate/collectionGroups/"
                              f"{ix['collectionGroup']}/indexes/i{n}", "queryScope": "COLLECTION",
                      "fields": ix["fields"] + [{"fieldPath": "__name__", "order": "ASCENDING"}]}
                     for n, ix in enumerate(wanted)]))
elif words[-1] == "list" and "ttls" in words and full:
    for group, field in (("holds", "purge_at"), ("cache_entries", "expires_at")):
        print(f"projects/p/databases/tollgate/collectionGroups/{group}/fields/{field}")
elif "describe" in words and not full:
    sys.exit("ERROR: (gcloud) NOT_FOUND: not found")
elif "create" in words and mode != "empty":
    sys.exit("ERROR: (gcloud) ALREADY_EXISTS: Resource already exists")
'''


def indexes() -> list[dict[str, Any]]:  # read at run time: indexes get added
    return json.loads((ROOT / "functions/firestore.indexes.json").read_text())["indexes"]


def run_deploy(tmp: Path, mode: str, *args: str) -> tuple[subprocess.CompletedProcess[str],
                                                            list[dict[str, Any]]]:
    bin_dir, log = tmp / "bin", tmp / "gcloud.log"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    log.write_text("")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log),
           "FAKE_MODE": mode, "FAKE_INDEXES": str(ROOT / "functions/firestore.indexes.json")}
    proc = subprocess.run(["bash", str(DEPLOY), *args], capture_output=True, text=True,
                          env=env, timeout=300)
    return proc, [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> list[list[str]]:
    """The commands of ``deploy.sh --dry-run my-proj europe-west1``, each as its argv."""
    proc, calls = run_deploy(tmp_path_factory.mktemp("dry"), "forbidden",
                             "--dry-run", "my-proj", "europe-west1")
    assert proc.returncode == 0, proc.stderr
    assert calls == [], "a dry run ran gcloud"
    assert "tga_" not in proc.stdout  # no admin token is made, let alone shown
    return [shlex.split(line[2:]) for line in proc.stdout.splitlines()
            if line.startswith("+ gcloud ")]


def find(cmds: list[list[str]], *parts: str) -> int:
    """Index of the first command with an argument containing each part."""
    hits = [i for i, argv in enumerate(cmds) if all(any(p in a for a in argv) for p in parts)]
    assert hits, f"no command with {parts}"
    return hits[0]


def test_dry_run_prints_every_step_in_order(dry_run: list[list[str]]) -> None:
    cmds = dry_run
    enable = find(cmds, "services", "enable")
    assert all(f"{api}.googleapis.com" in cmds[enable] for api in APIS)
    database = find(cmds, "databases", "create", "--database=tollgate",
                    "--type=firestore-native", "--location=europe-west1")
    accounts = [find(cmds, "service-accounts", "create", f"tollgate-{fn}") for fn in SIZES]
    ext = EXT.format("PROJECT_NUMBER")
    grants = [find(cmds, "add-iam-policy-binding", f"serviceAccount:tollgate-{fn}@", f"--role={r}",
                   condition) for fn, r, condition in [
        ("openai", "roles/datastore.user", "--condition=None"),
        ("openai", "roles/secretmanager.secretAccessor", f"--condition=expression={ext}"),
        ("admin", "roles/datastore.user", "--condition=None"),
        ("admin", "roles/secretmanager.admin", f"--condition=expression={ext}"),
        ("log", "roles/datastore.viewer", "--condition=None")]]
    secret = find(cmds, "secrets", "create", "tollgate-admin-tokens", "--data-file=-")
    secret_grant = find(cmds, "secrets", "add-iam-policy-binding", "tollgate-admin-tokens",
                        "serviceAccount:tollgate-admin@", "roles/secretmanager.secretAccessor")
    creates = [i for i, argv in enumerate(cmds) if argv[1:5] == ["firestore", "indexes",
                                                                    "composite", "create"]]
    assert len(creates) == len(indexes())
    for i, ix in zip(creates, indexes(), strict=True):
        assert {"--database=tollgate", f"--collection-group={ix['collectionGroup']}",
                "--query-scope=collection", "--async"} <= set(cmds[i])
        assert [a for a in cmds[i] if a.startswith("--field-config=")] == [
            f"--field-config=field-path={f['fieldPath']},order={f['order'].lower()}"
            for f in ix["fields"]]
    ttls = [i for i, argv in enumerate(cmds) if argv[1:5] == ["firestore", "fields", "ttls",
                                                                 "update"]]
    assert sorted(cmds[i][5:9] for i in ttls) == [  # settled holds and cache entries only
        ["expires_at", "--collection-group=cache_entries", "--enable-ttl", "--database=tollgate"],
        ["purge_at", "--collection-group=holds", "--enable-ttl", "--database=tollgate"]]
    deploys = [next(i for i, argv in enumerate(cmds) if argv[1:4] == ["functions", "deploy", fn])
               for fn in SIZES]
    for i, (fn, (memory, concurrency, timeout)) in zip(deploys, SIZES.items(), strict=True):
        assert {"--gen2", "--runtime=python312", "--cpu=1", "--trigger-http",
                "--allow-unauthenticated", f"--entry-point={fn}", f"--memory={memory}",
                f"--service-account=tollgate-{fn}@my-proj.iam.gserviceaccount.com",
                f"--concurrency={concurrency}", f"--timeout={timeout}",
                "--region=europe-west1", "--project=my-proj"} <= set(cmds[i])
        env = dict(kv.split("=", 1) for a in cmds[i] if a.startswith("--set-env-vars=")
                   for kv in a.removeprefix("--set-env-vars=").split(","))
        assert env["TOLLGATE_GCP_PROJECT"] == "my-proj" and env["TOLLGATE_DATABASE"] == "tollgate"
        assert env["TOLLGATE_SECRET_BACKEND"] == "gcp" and env["THREADS"] == concurrency
        assert env["TIKTOKEN_CACHE_DIR"] == "/workspace/tiktoken"
        assert env.get("TOLLGATE_FUNCTION_TIMEOUT_S") == ("900" if fn == "openai" else None)
    urls = [find(cmds, "functions", "describe", fn, "serviceConfig.uri") for fn in SIZES]
    assert enable < database < min(accounts) <= max(accounts) < min(grants)
    assert max(grants) < secret < secret_grant < min(creates) <= max(creates) < min(ttls)
    assert max(ttls) < min(deploys) <= max(deploys) < min(urls)


def test_converges_and_never_shows_the_token_unasked(tmp_path: Path) -> None:
    first, calls = run_deploy(tmp_path, "empty", "my-proj", "--show-admin-token")
    assert first.returncode == 0, first.stderr
    created = [c["argv"][:3] for c in calls if "create" in c["argv"]]
    assert created.count(["firestore", "databases", "create"]) == 1
    assert created.count(["iam", "service-accounts", "create"]) == 3
    assert created.count(["secrets", "create", "tollgate-admin-tokens"]) == 1
    assert created.count(["firestore", "indexes", "composite"]) == len(indexes())
    assert sum("ttls" in c["argv"] for c in calls) == 3  # one list, two updates
    assert any(EXT.format("123456789012") in a for c in calls for a in c["argv"])
    token = json.loads(next(c["stdin"] for c in calls if c["stdin"]))["admin"]
    assert len(token) > 40 and first.stdout.count(token) == 1  # --show-admin-token: once
    assert token not in first.stderr + json.dumps([c["argv"] for c in calls])
    assert "--url https://admin-abc123-ew.a.run.app" in first.stdout

    again, calls = run_deploy(tmp_path, "full", "my-proj")
    assert again.returncode == 0, again.stderr
    assert [c["argv"] for c in calls if "create" in c["argv"] or "update" in c["argv"]] == []
    assert sum(c["argv"][:2] == ["functions", "deploy"] for c in calls) == 3
    assert "gcloud secrets versions access latest --secret=tollgate-admin-tokens" in again.stdout

    racy, calls = run_deploy(tmp_path, "racy", "my-proj", "--show-admin-token")
    assert racy.returncode == 0, racy.stderr  # ALREADY_EXISTS on create counts as done
    stored = json.loads(next(c["stdin"] for c in calls if c["stdin"]))["admin"]
    assert stored not in racy.stdout  # that token was not stored: never presented as one


def test_missing_project_fails_clearly(tmp_path: Path) -> None:
    proc, calls = run_deploy(tmp_path, "forbidden")
    assert proc.returncode != 0 and "missing PROJECT_ID" in proc.stderr and calls == []


def test_shellcheck_is_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (CI installs it: apt-get install shellcheck)")
    proc = subprocess.run(["shellcheck", str(DEPLOY)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_cloudbuild_tests_then_deploys_like_deploy_sh(dry_run: list[list[str]]) -> None:
    build = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    assert int(str(build["timeout"]).removesuffix("s")) >= 1800
    assert build["options"]["logging"] == "CLOUD_LOGGING_ONLY"
    steps = {s["id"]: s for s in build["steps"]}
    assert "bash .ci/run" in "".join(steps["test"]["args"])
    assert "--stage-only /workspace/stage" in "".join(steps["stage"]["args"])
    subs = {**build["substitutions"], "PROJECT_ID": "my-proj"}

    def expand(arg: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: subs[m.group(1)], arg)

    for fn in SIZES:
        step = steps[f"deploy-{fn}"]
        assert step["waitFor"] == ["stage"] and step["entrypoint"] == "gcloud"
        args = [expand(a) for a in step["args"]]
        assert args[:3] == ["functions", "deploy", fn] and "--gen2" in args
        assert f"--entry-point={fn}" in args and "--source=/workspace/stage" in args
        ours = next(argv[1:] for argv in dry_run if argv[1:4] == ["functions", "deploy", fn])
        # the same flags, in the same order, as deploy.sh (its source is a temp dir)
        assert [a for a in args if not a.startswith("--source=")] == [
            a for a in ours if not a.startswith("--source=")]


def fetch(url: str, data: bytes | None = None) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, data=data,  # noqa: S310 - http on loopback only
                                 headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()
    except OSError:  # not listening (yet)
        return 0, "", b""


def test_staged_source_installs_and_serves__slow_pip_install(tmp_path: Path,
                                                             emulator: str) -> None:
    """SLOW (about a minute): installs the staged requirements.txt from PyPI into a fresh
    virtualenv, then serves each target from the staged directory alone."""
    stage, venv = tmp_path / "stage", tmp_path / "venv"
    subprocess.run(["bash", str(DEPLOY), "--stage-only", str(stage)], check=True, timeout=120)
    for name in ("main.py", "requirements.txt", ".gcloudignore", "functions/main.py",
                 "web/index.html"):
        assert (stage / name).is_file(), name
    assert not list(stage.rglob("__pycache__"))
    for name, (_url, sha256) in tokens._BPE_FILES.items():
        data = Path(tokens._cache_path(str(stage / "tiktoken"), name)).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha256, name
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "--no-cache-dir",
                    "-r", str(stage / "requirements.txt")], check=True, timeout=900)

    trap = socket.create_server(("127.0.0.1", 0))  # stands for the internet: must stay idle
    trap.setblocking(False)
    proxy = f"http://127.0.0.1:{trap.getsockname()[1]}"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path),
           "TOLLGATE_GCP_PROJECT": "stage-" + secrets.token_hex(4),
           "FIRESTORE_EMULATOR_HOST": emulator, "TIKTOKEN_CACHE_DIR": str(stage / "tiktoken"),
           "TOLLGATE_SECRET_BACKEND": "local",
           "TOLLGATE_SECRETS_FILE": str(tmp_path / "secrets.json"),
           **{k: proxy for k in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")},
           **{k: "127.0.0.1,localhost" for k in ("NO_PROXY", "no_proxy")}}
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    log = tmp_path / "servers.log"
    try:
        with log.open("wb") as out:
            for fn in SIZES:
                port = free_port()
                servers[fn] = (subprocess.Popen(
                    [str(venv / "bin/functions-framework"), "--source", str(stage / "main.py"),
                     "--target", fn, "--host", "127.0.0.1", "--port", str(port)],
                    cwd=stage, env=env, start_new_session=True, stdout=out,
                    stderr=subprocess.STDOUT), f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        for proc, url in servers.values():
            while fetch(url + "/")[0] == 0:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)

        status, kind, body = fetch(servers["openai"][1] + "/v1/chat/completions",
                                   b'{"model": "gpt-4o-mini", "messages": []}')
        assert status == 401 and "json" in kind
        assert json.loads(body)["error"]["code"] == "invalid_api_key"
        status, kind, body = fetch(servers["admin"][1] + "/users")
        assert status == 401 and "error" in json.loads(body)
        status, kind, body = fetch(servers["log"][1] + "/log")
        assert status == 200 and kind.startswith("text/html") and b"log/app.js" in body
        # tiktoken loads both encodings from the staged files alone
        check = "import tiktoken; [tiktoken.get_encoding(n) for n in ('o200k_base', 'cl100k_base')]"
        proc = subprocess.run([str(venv / "bin/python"), "-c", check], cwd=stage, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    finally:
        for proc, _url in servers.values():
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    with pytest.raises(BlockingIOError):
        trap.accept()  # no process tried to download anything
    trap.close()
