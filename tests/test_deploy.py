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

from functions.core import encodings
from tests.emulator import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy.sh"
# name: (memory, concurrency, timeout)
SIZES = {
    "openai": ("2Gi", "40", "900s"),
    "admin": ("512Mi", "8", "120s"),
    "log": ("512Mi", "16", "60s"),
}
APIS = (
    "cloudfunctions",
    "run",
    "cloudbuild",
    "artifactregistry",
    "firestore",
    "secretmanager",
    "iam",
    "logging",
)
EXT = 'resource.name.startsWith("projects/{}/secrets/tollgate-ext-")'

# FAKE_MODE: "forbidden" (a dry run: any call fails), "empty" (nothing exists; creates
# make things exist), "full" (everything exists), "racy" (a resource's first check misses
# it, and its create answers ALREADY_EXISTS). Knobs, for the failures of audit items 17-18:
# FAKE_DB_LAG (describes of a new database that still answer NOT_FOUND), FAKE_NO_VERSION
# (the admin-token secret exists without any version), FAKE_POLICY (an organisation
# policy refuses allUsers), FAKE_BUILD_FAILS (the function whose build fails).
FAKE_GCLOUD = r"""#!/usr/bin/env python3
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
with open(os.environ["FAKE_STATE"]) as f:
    state = json.load(f)  # {"exists": [...], "seen": {key: n}, "lag": n}
def save():
    with open(os.environ["FAKE_STATE"], "w") as f:
        json.dump(state, f)
def fail(message):
    save()
    sys.exit("ERROR: (gcloud." + ".".join(words[:3]) + ") " + message)
def key():
    if words[:2] == ["firestore", "databases"]:
        return "database"
    if words[:2] == ["iam", "service-accounts"]:
        return "sa:" + words[3].split("@")[0]
    if words[:2] == ["secrets", "versions"]:
        return "secret-version"
    if words[0] == "secrets":
        return "secret"
    if words[0] == "functions":
        return "function:" + words[2]
    if words[:2] == ["scheduler", "jobs"]:
        return "job:" + words[-1]
    return None
k = key()
if words[:2] == ["projects", "describe"]:
    print("123456789012")
elif words[:3] == ["secrets", "versions", "list"]:
    if "secret-version" in state["exists"]:
        print("projects/123456789012/secrets/tollgate-admin-tokens/versions/1")
elif words[:3] == ["secrets", "versions", "add"]:
    state["exists"].append("secret-version")
elif words[:2] == ["functions", "deploy"]:
    if os.environ.get("FAKE_BUILD_FAILS") == words[2]:
        fail("OperationError: code=3, message=Build failed with status: FAILURE")
    state["exists"].append(k)
    if os.environ.get("FAKE_POLICY") and "--allow-unauthenticated" in args:
        fail("FAILED_PRECONDITION: One or more users named in the policy do not belong to"
             " a permitted customer, perhaps due to an organization policy.")
elif words[:2] == ["functions", "add-invoker-policy-binding"]:
    if k not in state["exists"]:
        fail("NOT_FOUND: function " + words[2])
    if os.environ.get("FAKE_POLICY"):
        fail("FAILED_PRECONDITION: One or more users named in the policy do not belong to"
             " a permitted customer, perhaps due to an organization policy.")
elif words[:2] == ["functions", "describe"]:
    if k not in state["exists"]:
        fail("NOT_FOUND: function " + words[2])
    print(f"https://{words[2]}-abc123-ew.a.run.app")
elif words[-1] == "list" and "indexes" in words:
    with open(os.environ["FAKE_INDEXES"]) as f:
        wanted = json.load(f)["indexes"] if full else []
    print(json.dumps([{"name": f"projects/p/databases/tollgate/collectionGroups/"
                              f"{ix['collectionGroup']}/indexes/i{n}", "queryScope": "COLLECTION",
                      "fields": ix["fields"] + [{"fieldPath": "__name__", "order": "ASCENDING"}]}
                     for n, ix in enumerate(wanted)]))
elif words[-1] == "list" and "ttls" in words and full:
    for group, field in (("holds", "purge_at"), ("grants", "purge_at"),
                         ("cache_entries", "expires_at")):
        print(f"projects/p/databases/tollgate/collectionGroups/{group}/fields/{field}")
elif "describe" in words and k:
    seen = state["seen"][k] = state["seen"].get(k, 0) + 1
    if k not in state["exists"] or (mode == "racy" and seen == 1):
        fail("NOT_FOUND: not found")
    if k == "database" and state["lag"] > 0:
        state["lag"] -= 1
        fail("NOT_FOUND: database tollgate is being created")
    print("projects/my-proj/databases/tollgate" if k == "database" else k)
elif "create" in words and k:
    if k in state["exists"]:
        fail("ALREADY_EXISTS: Resource already exists")
    state["exists"].append(k)
    if k == "secret" and stdin:
        state["exists"].append("secret-version")
    if k == "database":
        state["lag"] = int(os.environ.get("FAKE_DB_LAG", "0"))
save()
"""
EVERYTHING = [
    "database",
    "sa:tollgate-openai",
    "sa:tollgate-admin",
    "sa:tollgate-log",
    "sa:tollgate-build",
    "secret",
    "secret-version",
    "function:openai",
    "function:admin",
    "function:log",
    "sa:tollgate-scheduler",
    "job:tollgate-reconcile",
    "job:tollgate-sweep",
]


def indexes() -> list[dict[str, Any]]:  # read at run time: indexes get added
    return json.loads((ROOT / "functions/firestore.indexes.json").read_text())["indexes"]


def run_deploy(
    tmp: Path,
    mode: str,
    *args: str,
    **knobs: str,
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """Run deploy.sh against the fake gcloud; KNOBS are FAKE_* settings (lower case)."""
    bin_dir, log, state = tmp / "bin", tmp / "gcloud.log", tmp / "state.json"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    log.write_text("")
    exists = [
        k
        for k in EVERYTHING
        if mode in ("full", "racy") and not (k == "secret-version" and knobs.get("no_version"))
    ]
    state.write_text(json.dumps({"exists": exists, "seen": {}, "lag": 0}))
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_LOG": str(log),
        "FAKE_MODE": mode,
        "FAKE_STATE": str(state),
        "TOLLGATE_DEPLOY_POLL_S": "0.01",
        "FAKE_INDEXES": str(ROOT / "functions/firestore.indexes.json"),
        **{f"FAKE_{k.upper()}": v for k, v in knobs.items()},
    }
    proc = subprocess.run(
        ["bash", str(DEPLOY), *args], capture_output=True, text=True, env=env, timeout=300
    )
    return proc, [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> list[list[str]]:
    """The commands of ``deploy.sh --dry-run my-proj europe-west1``, each as its argv."""
    proc, calls = run_deploy(
        tmp_path_factory.mktemp("dry"), "forbidden", "--dry-run", "my-proj", "europe-west1"
    )
    assert proc.returncode == 0, proc.stderr
    assert calls == [], "a dry run ran gcloud"
    assert "tga_" not in proc.stdout  # no admin token is made, let alone shown
    return [
        shlex.split(line[2:]) for line in proc.stdout.splitlines() if line.startswith("+ gcloud ")
    ]


def find(cmds: list[list[str]], *parts: str) -> int:
    """Index of the first command with an argument containing each part."""
    hits = [i for i, argv in enumerate(cmds) if all(any(p in a for a in argv) for p in parts)]
    assert hits, f"no command with {parts}"
    return hits[0]


def test_dry_run_prints_every_step_in_order(dry_run: list[list[str]]) -> None:
    cmds = dry_run
    enable = find(cmds, "services", "enable")
    assert all(f"{api}.googleapis.com" in cmds[enable] for api in APIS)
    database = find(
        cmds,
        "databases",
        "create",
        "--database=tollgate",
        "--type=firestore-native",
        "--location=europe-west1",
    )
    accounts = [
        find(cmds, "service-accounts", "create", f"tollgate-{who}")
        for who in [*SIZES, "build", "scheduler"]
    ]
    ext = EXT.format("PROJECT_NUMBER")
    grants = [
        find(
            cmds,
            "add-iam-policy-binding",
            f"serviceAccount:tollgate-{fn}@",
            f"--role={r}",
            condition,
        )
        for fn, r, condition in [
            ("openai", "roles/datastore.user", "--condition=None"),
            ("openai", "roles/secretmanager.secretAccessor", f"--condition=expression={ext}"),
            ("admin", "roles/datastore.user", "--condition=None"),
            ("admin", "roles/secretmanager.admin", f"--condition=expression={ext}"),
            ("log", "roles/datastore.viewer", "--condition=None"),
            ("build", "roles/cloudbuild.builds.builder", "--condition=None"),
        ]
    ]
    # the OpenAI admin key (reconciliation) is the admin function's, never the proxy's
    from functions.store.reconciliations import ADMIN_KEY_SECRET

    assert any(ADMIN_KEY_SECRET in arg for arg in cmds[grants[3]])
    assert not any(
        ADMIN_KEY_SECRET in arg or "tollgate-openai-admin" in arg for arg in cmds[grants[1]]
    )
    assert not ADMIN_KEY_SECRET.startswith("tollgate-ext-")
    secret = find(cmds, "secrets", "create", "tollgate-admin-tokens", "--data-file=-")
    secret_grant = find(
        cmds,
        "secrets",
        "add-iam-policy-binding",
        "tollgate-admin-tokens",
        "serviceAccount:tollgate-admin@",
        "roles/secretmanager.secretAccessor",
    )
    creates = [
        i
        for i, argv in enumerate(cmds)
        if argv[1:5] == ["firestore", "indexes", "composite", "create"]
    ]
    assert len(creates) == len(indexes())
    for i, ix in zip(creates, indexes(), strict=True):
        assert {
            "--database=tollgate",
            f"--collection-group={ix['collectionGroup']}",
            "--query-scope=collection",
            "--async",
        } <= set(cmds[i])
        assert [a for a in cmds[i] if a.startswith("--field-config=")] == [
            f"--field-config=field-path={f['fieldPath']},order={f['order'].lower()}"
            for f in ix["fields"]
        ]
    ttls = [
        i for i, argv in enumerate(cmds) if argv[1:5] == ["firestore", "fields", "ttls", "update"]
    ]
    assert sorted(cmds[i][5:9] for i in ttls) == [  # settled holds, closed grants, cache
        ["expires_at", "--collection-group=cache_entries", "--enable-ttl", "--database=tollgate"],
        ["purge_at", "--collection-group=grants", "--enable-ttl", "--database=tollgate"],
        ["purge_at", "--collection-group=holds", "--enable-ttl", "--database=tollgate"],
    ]
    deploys = [
        next(i for i, argv in enumerate(cmds) if argv[1:4] == ["functions", "deploy", fn])
        for fn in SIZES
    ]
    for i, (fn, (memory, concurrency, timeout)) in zip(deploys, SIZES.items(), strict=True):
        assert {
            "--gen2",
            "--runtime=python312",
            "--cpu=1",
            "--trigger-http",
            f"--entry-point={fn}",
            f"--memory={memory}",
            f"--service-account=tollgate-{fn}@my-proj.iam.gserviceaccount.com",
            "--build-service-account=projects/my-proj/serviceAccounts/"
            "tollgate-build@my-proj.iam.gserviceaccount.com",
            f"--concurrency={concurrency}",
            f"--timeout={timeout}",
            "--region=europe-west1",
            "--project=my-proj",
        } <= set(cmds[i])
        env = dict(
            kv.split("=", 1)
            for a in cmds[i]
            if a.startswith("--set-env-vars=")
            for kv in a.removeprefix("--set-env-vars=").split(",")
        )
        assert env["TOLLGATE_GCP_PROJECT"] == "my-proj" and env["TOLLGATE_DATABASE"] == "tollgate"
        assert env["TOLLGATE_SECRET_BACKEND"] == "gcp" and env["THREADS"] == concurrency
        assert env["TIKTOKEN_CACHE_DIR"] == "/workspace/tiktoken"
        assert env.get("TOLLGATE_FUNCTION_TIMEOUT_S") == ("900" if fn == "openai" else None)
    public = [
        find(
            cmds,
            "functions",
            "add-invoker-policy-binding",
            fn,
            "--member=allUsers",
            "--region=europe-west1",
            "--project=my-proj",
        )
        for fn in SIZES
    ]
    urls = [find(cmds, "functions", "describe", fn, "serviceConfig.uri") for fn in SIZES]
    # Cloud Scheduler: the reconciliation daily, the sweep every 5 minutes, each with the
    # scheduler's OIDC token for an audience the admin function is told (no admin token)
    audience = "https://europe-west1-my-proj.cloudfunctions.net/admin"
    scheduler = "tollgate-scheduler@my-proj.iam.gserviceaccount.com"
    assert "cloudscheduler.googleapis.com" in cmds[enable]
    admin_env = cmds[deploys[1]][-1]
    assert f"TOLLGATE_SCHEDULER_SA={scheduler}" in admin_env
    assert f"TOLLGATE_SCHEDULER_AUDIENCE={audience}" in admin_env
    jobs = [
        find(
            cmds,
            "scheduler",
            "jobs",
            "create",
            "http",
            name,
            f"--schedule={cron}",
            f"--uri={audience}{path}",
            f"--oidc-service-account-email={scheduler}",
            f"--oidc-token-audience={audience}",
            "--location=europe-west1",
        )
        for name, cron, path in [
            ("tollgate-reconcile", "0 6 * * *", "/reconcile"),
            ("tollgate-sweep", "*/5 * * * *", "/sweep"),
        ]
    ]
    assert not any("Authorization" in a or "tga_" in a for i in jobs for a in cmds[i])
    assert enable < database < min(accounts) <= max(accounts) < min(grants)
    assert max(grants) < secret < secret_grant < min(creates) <= max(creates) < min(ttls)
    assert max(ttls) < min(deploys) <= max(deploys) < min(public) <= max(public) < min(jobs)
    assert max(jobs) < min(urls)


def test_converges_and_never_shows_the_token_unasked(tmp_path: Path) -> None:
    first, calls = run_deploy(tmp_path, "empty", "my-proj", "--show-admin-token")
    assert first.returncode == 0, first.stderr
    created = [c["argv"][:3] for c in calls if "create" in c["argv"]]
    assert created.count(["firestore", "databases", "create"]) == 1
    assert created.count(["iam", "service-accounts", "create"]) == 5  # 3 functions, build,
    assert created.count(["scheduler", "jobs", "create"]) == 2  # scheduler; its two jobs
    assert created.count(["secrets", "create", "tollgate-admin-tokens"]) == 1
    assert created.count(["firestore", "indexes", "composite"]) == len(indexes())
    assert sum("ttls" in c["argv"] for c in calls) == 4  # one list, three updates
    assert any(EXT.format("123456789012") in a for c in calls for a in c["argv"])
    token = json.loads(next(c["stdin"] for c in calls if c["stdin"]))["admin"]
    assert len(token) > 40 and first.stdout.count(token) == 1  # --show-admin-token: once
    assert token not in first.stderr + json.dumps([c["argv"] for c in calls])
    assert "--url https://admin-abc123-ew.a.run.app" in first.stdout
    assert "WARNING" not in first.stderr

    again, calls = run_deploy(tmp_path, "full", "my-proj")
    assert again.returncode == 0, again.stderr
    assert [
        c["argv"]
        for c in calls
        if ("create" in c["argv"] or "update" in c["argv"]) and c["argv"][0] != "scheduler"
    ] == []
    # a scheduler job that exists is brought to the current definition
    assert [c["argv"][:5] for c in calls if c["argv"][:3] == ["scheduler", "jobs", "update"]] == [
        ["scheduler", "jobs", "update", "http", "tollgate-reconcile"],
        ["scheduler", "jobs", "update", "http", "tollgate-sweep"],
    ]
    assert sum(c["argv"][:2] == ["functions", "deploy"] for c in calls) == 3
    assert not any(c["stdin"] for c in calls)  # no secret, no version, no token
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
            a for a in ours if not a.startswith("--source=")
        ]


def fetch(url: str, data: bytes | None = None) -> tuple[int, str, bytes]:
    req = urllib.request.Request(  # noqa: S310 - http on loopback only
        url,
        data=data,
        headers={"Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()
    except OSError:  # not listening (yet)
        return 0, "", b""


def test_staged_source_installs_and_serves__slow_pip_install(tmp_path: Path, emulator: str) -> None:
    """SLOW (about a minute): installs the staged requirements.txt from PyPI into a fresh
    virtualenv, then serves each target from the staged directory alone."""
    stage, venv = tmp_path / "stage", tmp_path / "venv"
    subprocess.run(["bash", str(DEPLOY), "--stage-only", str(stage)], check=True, timeout=120)
    for name in (
        "main.py",
        "requirements.txt",
        ".gcloudignore",
        "functions/main.py",
        "web/index.html",
    ):
        assert (stage / name).is_file(), name
    assert not list(stage.rglob("__pycache__"))
    for name, (_url, sha256) in encodings._BPE_FILES.items():
        data = Path(encodings._cache_path(str(stage / "tiktoken"), name)).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha256, name
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin/python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-cache-dir",
            "-r",
            str(stage / "requirements.txt"),
        ],
        check=True,
        timeout=900,
    )

    trap = socket.create_server(("127.0.0.1", 0))  # stands for the internet: must stay idle
    trap.setblocking(False)
    proxy = f"http://127.0.0.1:{trap.getsockname()[1]}"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "TOLLGATE_GCP_PROJECT": "stage-" + secrets.token_hex(4),
        "FIRESTORE_EMULATOR_HOST": emulator,
        "TIKTOKEN_CACHE_DIR": str(stage / "tiktoken"),
        "TOLLGATE_SECRET_BACKEND": "local",
        "TOLLGATE_SECRETS_FILE": str(tmp_path / "secrets.json"),
        **{k: proxy for k in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")},
        **{k: "127.0.0.1,localhost" for k in ("NO_PROXY", "no_proxy")},
    }
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    log = tmp_path / "servers.log"
    try:
        with log.open("wb") as out:
            for fn in SIZES:
                port = free_port()
                servers[fn] = (
                    subprocess.Popen(
                        [
                            str(venv / "bin/functions-framework"),
                            "--source",
                            str(stage / "main.py"),
                            "--target",
                            fn,
                            "--host",
                            "127.0.0.1",
                            "--port",
                            str(port),
                        ],
                        cwd=stage,
                        env=env,
                        start_new_session=True,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    ),
                    f"http://127.0.0.1:{port}",
                )
        deadline = time.monotonic() + 60
        for proc, url in servers.values():
            while fetch(url + "/")[0] == 0:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)

        status, kind, body = fetch(
            servers["openai"][1] + "/v1/chat/completions",
            b'{"model": "gpt-4o-mini", "messages": []}',
        )
        assert status == 401 and "json" in kind
        assert json.loads(body)["error"]["code"] == "invalid_api_key"
        status, kind, body = fetch(servers["admin"][1] + "/users")
        assert status == 401 and "error" in json.loads(body)
        status, kind, body = fetch(servers["log"][1] + "/log")
        assert status == 200 and kind.startswith("text/html") and b"log/app.js" in body
        # tiktoken loads both encodings from the staged files alone
        check = "import tiktoken; [tiktoken.get_encoding(n) for n in ('o200k_base', 'cl100k_base')]"
        proc = subprocess.run(
            [str(venv / "bin/python"), "-c", check],
            cwd=stage,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
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


# ---- audit (issue 14) items 15-18, and every command checked against the real gcloud


def cloudbuild() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())


def write_sdk(tmp: Path, emulator_java: int, java_version: str) -> dict[str, str]:
    """A fake Cloud SDK whose emulator's classes target EMULATOR_JAVA, a `java` reporting
    JAVA_VERSION, and an apt-get that finds no newer Java (Debian 12). Returns the env."""
    import zipfile

    sdk, tools = tmp / "sdk", tmp / "bin"
    jar = sdk / "platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
    jar.parent.mkdir(parents=True)
    (sdk / "bin").mkdir()
    tools.mkdir()
    (sdk / "VERSION").write_text("999.0.0\n")
    with zipfile.ZipFile(jar, "w") as z:
        header = b"\xca\xfe\xba\xbe\x00\x00" + (emulator_java + 44).to_bytes(2, "big")
        z.writestr(
            "com/google/cloud/datastore/emulator/firestore/CloudFirestore.class",
            header + b"\x00" * 16,
        )
    scripts = {
        sdk / "bin/gcloud": "echo 'fake gcloud: not expected here' >&2; exit 1",
        tools / "java": f"echo 'openjdk version \"{java_version}\" 2025-04-15' >&2",
        tools / "apt-get": f'echo "$*" >> {tmp}/apt.log\n'
        'echo "E: Unable to locate package ${*: -1}" >&2; exit 100',
    }
    for path, body in scripts.items():
        path.write_text(f"#!/bin/sh\n{body}\n" if "${" not in body else f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)
    return {**os.environ, "PATH": f"{sdk / 'bin'}:{tools}:{os.environ['PATH']}"}


@pytest.mark.parametrize(
    ("emulator_java", "java_version", "ok"),
    [
        (21, "17.0.15", False),  # a newer emulator, bookworm's Java: the case CI would hit
        (11, "1.8.0_292", False),  # old-style version string
        (21, "21.0.7", True),
        (11, "17.0.15", True),  # this machine: gcloud 528's emulator runs on 11+
    ],
)
def test_audit15_setup_checks_java_against_the_emulator(
    tmp_path: Path, emulator_java: int, java_version: str, ok: bool
) -> None:
    env = write_sdk(tmp_path, emulator_java, java_version)
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts/setup.sh")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    found = (
        java_version.split(".")[1] if java_version.startswith("1.") else java_version.split(".")[0]
    )
    if ok:
        assert proc.returncode == 0, proc.stderr
        assert "needs Java" not in proc.stderr
        return
    assert proc.returncode == 1
    assert f"needs Java {emulator_java} or newer" in proc.stderr  # what is needed
    assert f"found Java {found} at {tmp_path}/bin/java" in proc.stderr  # what was found
    assert f"apt-get install openjdk-{emulator_java}-jre-headless" in proc.stderr  # how
    assert "google-cloud-cli-firestore-emulator=528.0.0-0" in proc.stderr
    if os.getuid() == 0:  # as root it tried Debian's package first
        assert f"openjdk-{emulator_java}-jre-headless" in (tmp_path / "apt.log").read_text()


def test_audit15_cloudbuild_tests_on_java_21() -> None:
    steps = {s["id"]: s for s in cloudbuild()["steps"]}
    script = "".join(steps["test"]["args"])
    # Emulators after gcloud 528 need Java 21: Debian 13's openjdk-21, not bookworm's 17
    assert "openjdk-21-jre-headless" in script and "default-jre" not in script
    assert steps["test"]["name"].endswith("-trixie") and "bookworm" not in steps["test"]["name"]
    assert steps["stage"]["name"] == steps["test"]["name"]  # it reuses the test step's .venv
    assert "bash .ci/run" in script  # which runs scripts/setup.sh and its Java check


BUILD_SA = "tollgate-build@my-proj.iam.gserviceaccount.com"


def test_audit16_builds_run_as_an_account_with_the_builder_role(dry_run: list[list[str]]) -> None:
    cmds = dry_run
    account = find(cmds, "iam", "service-accounts", "create", "tollgate-build")
    grant = find(cmds, "projects", "add-iam-policy-binding", f"--member=serviceAccount:{BUILD_SA}")
    assert {"--role=roles/cloudbuild.builds.builder", "--condition=None"} <= set(cmds[grant])
    deploys = [i for i, argv in enumerate(cmds) if argv[1:3] == ["functions", "deploy"]]
    assert len(deploys) == 3 and account < grant < min(deploys)
    for i in deploys:
        assert f"--build-service-account=projects/my-proj/serviceAccounts/{BUILD_SA}" in cmds[i]
    build = cloudbuild()
    assert build["substitutions"]["_BUILD_SA"] == "tollgate-build"
    for fn in SIZES:
        args = next(s["args"] for s in build["steps"] if s["id"] == f"deploy-{fn}")
        assert (
            "--build-service-account=projects/$PROJECT_ID/serviceAccounts/"
            "${_BUILD_SA}@${PROJECT_ID}.iam.gserviceaccount.com"
        ) in args


def invoker_fix(fn: str) -> str:
    return (
        f"gcloud functions add-invoker-policy-binding {fn} --region=europe-west1 "
        "--project=my-proj --member=allUsers"
    )


def test_audit17_org_policy_against_allusers_deploys_all_three_then_warns(tmp_path: Path) -> None:
    proc, calls = run_deploy(tmp_path, "full", "my-proj", "europe-west1", policy="1")
    assert proc.returncode == 3, proc.stderr  # documented: deployed, not public
    assert [c["argv"][2] for c in calls if c["argv"][:2] == ["functions", "deploy"]] == [
        "openai",
        "admin",
        "log",
    ]
    tried = [
        c["argv"] for c in calls if c["argv"][:2] == ["functions", "add-invoker-policy-binding"]
    ]
    assert [argv[2] for argv in tried] == ["openai", "admin", "log"]
    warning = proc.stderr[proc.stderr.index("WARNING: deployed, but not public") :]
    assert "openai admin log" in warning and "allowedPolicyMemberDomains" in warning
    for fn, argv in zip(SIZES, tried, strict=True):
        assert f"  {invoker_fix(fn)}\n" in warning
        assert shlex.split(invoker_fix(fn))[1:] == [a for a in argv if a != "--format=none"]
    assert "https://openai-abc123-ew.a.run.app" in proc.stdout  # URLs are still printed
    doc = (ROOT / "docs/deploy.md").read_text()
    assert (
        "exit status 3" in doc.lower()
        and invoker_fix("NAME").replace("europe-west1", "REGION").replace("my-proj", "PROJECT_ID")
        in doc
    )
    usage = subprocess.run(["bash", str(DEPLOY), "--help"], capture_output=True, text=True)
    assert re.search(r"^  3  .*deployed but not all are public", usage.stdout, re.M)


def test_audit17_one_failed_build_does_not_stop_the_other_functions(tmp_path: Path) -> None:
    proc, calls = run_deploy(tmp_path, "empty", "my-proj", build_fails="admin")
    assert proc.returncode == 1, proc.stderr
    assert [c["argv"][2] for c in calls if c["argv"][:2] == ["functions", "deploy"]] == [
        "openai",
        "admin",
        "log",
    ]
    assert [c["argv"][2] for c in calls if c["argv"][1] == "add-invoker-policy-binding"] == [
        "openai",
        "log",
    ]
    assert "not deployed: admin" in proc.stderr and "WARNING" not in proc.stderr
    assert "https://log-abc123-ew.a.run.app" in proc.stdout


def commands_in(markdown: str) -> list[str]:
    """The gcloud commands of a Markdown file's code blocks, continuation lines joined."""
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", markdown, re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if "gcloud " in line]


def test_audit18_every_iam_binding_passes_a_condition(dry_run: list[list[str]]) -> None:
    """Once a project's policy holds a conditional binding, add-iam-policy-binding without
    --condition prompts, and fails when it cannot: every one must say --condition."""
    docs = [
        c
        for c in commands_in((ROOT / "docs/deploy.md").read_text())
        if "add-iam-policy-binding" in c
    ]
    assert any("roles/cloudbuild.builds.builder" in c for c in docs)
    assert docs and all(re.search(r"--condition=\S", c) for c in docs), docs
    bindings = [argv for argv in dry_run if "add-iam-policy-binding" in argv]
    assert len(bindings) == 7
    assert all(any(a.startswith("--condition=") for a in argv) for argv in bindings)


def test_audit18_waits_for_a_new_database_before_its_indexes(
    tmp_path: Path, dry_run: list[list[str]]
) -> None:
    create = find(dry_run, "firestore", "databases", "create")
    wait = find(dry_run, "firestore", "databases", "describe", "--format=value(name)")
    first_index = find(dry_run, "firestore", "indexes", "composite", "create")
    assert create < wait < first_index

    proc, calls = run_deploy(tmp_path, "empty", "my-proj", db_lag="3")
    assert proc.returncode == 0, proc.stderr
    argvs = [c["argv"][:3] for c in calls]
    created = argvs.index(["firestore", "databases", "create"])
    indexed = argvs.index(["firestore", "indexes", "composite"], created)
    polls = argvs[created:indexed].count(["firestore", "databases", "describe"])
    assert polls == 4  # three NOT_FOUND while it is being created, then found

    never, calls = run_deploy(tmp_path, "empty", "my-proj", db_lag="100000")
    assert never.returncode == 1 and "was not ready after" in never.stderr
    assert [c["argv"][:3] for c in calls].count(["firestore", "databases", "describe"]) == 61
    assert not any("indexes" in c["argv"] or "deploy" in c["argv"] for c in calls)


def test_audit18_fills_an_admin_secret_left_without_a_version(tmp_path: Path) -> None:
    proc, calls = run_deploy(tmp_path, "full", "my-proj", "--show-admin-token", no_version="1")
    assert proc.returncode == 0, proc.stderr
    added = [c for c in calls if c["argv"][:3] == ["secrets", "versions", "add"]]
    assert len(added) == 1 and added[0]["argv"][3] == "tollgate-admin-tokens"
    assert "--data-file=-" in added[0]["argv"]
    token = json.loads(added[0]["stdin"])["admin"]
    assert token.startswith("tga_") and proc.stdout.count(token) == 1  # shown as asked, once
    assert token not in proc.stderr + json.dumps([c["argv"] for c in calls])
    assert not any(c["argv"][:2] == ["secrets", "create"] for c in calls)

    again, calls = run_deploy(tmp_path, "full", "my-proj")  # it has a version: left alone
    assert again.returncode == 0, again.stderr
    assert any(c["argv"][:3] == ["secrets", "versions", "list"] for c in calls)
    assert not any(c["argv"][:3] == ["secrets", "versions", "add"] for c in calls)


def test_every_gcloud_command_parses_with_the_real_cli(
    tmp_path: Path, dry_run: list[list[str]]
) -> None:
    """The real gcloud, without credentials, parses each command and then stops at
    "no active account" (exit 1); a flag or value it does not know is exit 2."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        pytest.skip("gcloud is not installed")
    _proc, calls = run_deploy(tmp_path / "stub", "full", "my-proj", no_version="1", policy="1")
    build = cloudbuild()
    subs = {**build["substitutions"], "PROJECT_ID": "my-proj"}
    cloud = [
        [re.sub(r"\$\{?(\w+)\}?", lambda m: subs[m.group(1)], a) for a in s["args"]]
        for s in build["steps"]
        if s.get("entrypoint") == "gcloud"
    ]
    docs = [
        shlex.split(c[c.index("gcloud ") + 7 :])
        for c in commands_in((ROOT / "docs/deploy.md").read_text())
        if c.startswith("gcloud ") and "|" not in c
    ]
    source = tmp_path / "stage"
    source.mkdir()
    commands = {
        tuple("--source=" + str(source) if a.startswith("--source=") else a for a in argv)
        for argv in [*(d[1:] for d in dry_run), *(c["argv"] for c in calls), *cloud, *docs]
    }
    # One per command and set of flags (about 1.5 s of CPU each): the nine index creates
    # differ in field names only, the bindings in the member's name. A condition or a
    # member's kind (None or an expression; a service account or allUsers) is kept apart.
    verbs = {
        "enable",
        "describe",
        "create",
        "list",
        "update",
        "deploy",
        "access",
        "add",
        "submit",
        "add-iam-policy-binding",
        "add-invoker-policy-binding",
    }
    shapes: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[str, ...]] = {}
    for argv in sorted(commands):
        words = tuple(a for a in argv if not a.startswith("-"))
        path = next((words[: i + 1] for i, w in enumerate(words) if w in verbs), words)
        flags = tuple(
            sorted(
                a[: a.index("=") + 5]
                if a.startswith(("--condition=", "--member="))
                else a.split("=")[0]
                for a in argv
                if a.startswith("-")
            )
        )
        shapes.setdefault((path, flags), argv)
    commands = set(shapes.values())
    commands.add(
        ("functions", "add-invoker-policy-binding", "x", "--member=allUsers", "--regin=r")
    )  # a typo: proves the check can fail
    env = {
        **os.environ,
        "CLOUDSDK_CONFIG": str(tmp_path / "config"),
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
    }

    def parse(argv: tuple[str, ...]) -> tuple[tuple[str, ...], int, str]:
        p = subprocess.run(
            [gcloud, *argv],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return argv, p.returncode, p.stderr

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(parse, sorted(commands)))
    bad = {
        " ".join(argv): err.strip().splitlines()[0]
        for argv, rc, err in results
        if rc == 2 or "unrecognized arguments" in err or "invalid choice" in err
    }
    assert list(bad) == ["functions add-invoker-policy-binding x --member=allUsers --regin=r"], bad
