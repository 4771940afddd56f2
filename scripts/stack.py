"""Run the whole Tollgate stack on loopback: Firestore emulator, a fake OpenAI upstream
(unless a real key is configured), and the functions, each under functions-framework
(gunicorn) as in production. Seeds a demo project and prints URLs and a curl.

    python -m scripts.stack            # until Ctrl-C
    python -m scripts.stack --smoke    # start, make the printed call, check it was booked, stop

Real upstream: set OPENAI_API_KEY (and optionally OPENAI_BASE_URL) before starting.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from google.cloud import firestore

from functions.admin import ADMIN_TOKENS_SECRET
from functions.membership import Membership
from functions.provision import Provisioner
from functions.secret_store import LocalSecretStore
from tests.emulator import Emulator, free_port
from tests.fake_upstream import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "demo-tollgate"
FUNCTIONS = ("openai", "admin", "log")
DEMO_MODELS = ("gpt-4o-mini", "gpt-4.1-nano", "text-embedding-3-small")
FAKE_KEY = "sk-fake-local-upstream"


def seed(db: firestore.Client, secrets_file: Path, upstream_key: str,
         base_url: str | None, admin_token: str) -> dict[str, str]:
    from functions.price_table import openai_price_table

    store = LocalSecretStore(secrets_file)
    store.put(ADMIN_TOKENS_SECRET, json.dumps({"local-admin": admin_token}))
    prov = Provisioner(db, store)
    prov.put_external_key("main", upstream_key, base_url)
    entries, _skipped = openai_price_table()
    for entry in entries:
        for price in entry.prices:
            prov.add_price(entry.model, price)
    prov.create_user("alice", "Alice", "alice@example.com")
    prov.create_user("bob", "Bob", "bob@example.com")
    prov.create_project("demo", name="Demo project", external_key="main", budget_usd="5",
                        budget_period="monthly", allowed_models=DEMO_MODELS,
                        default_max_output_tokens=512)
    members = Membership(db)
    return {"alice": members.add_member("demo", "alice", role="lead", budget_usd="2"),
            "bob": members.add_member("demo", "bob", budget_usd="1")}


def _wait_http(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()  # noqa: S310
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout_s:.0f} s")


def start_function(target: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "functions_framework", "--source",
         str(ROOT / "functions" / "main.py"), "--target", target, "--host", "127.0.0.1",
         "--port", str(port)],
        env=env, cwd=ROOT, start_new_session=True, stdin=subprocess.DEVNULL)


def smoke(url: str, key: str, db: firestore.Client) -> None:
    body = json.dumps({"model": "gpt-4o-mini",
                       "messages": [{"role": "user", "content": "Hello"}]}).encode()
    headers = {"Authorization": f"alice {key}", "Content-Type": "application/json"}
    req = urllib.request.Request(  # noqa: S310 - a loopback URL we built
        url + "/openai", data=body, method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
        answer = json.load(r)
        call_id = r.headers["x-tollgate-call-id"]
    rec = db.collection("usage").document(call_id).get().to_dict()
    assert rec and rec["status"] == "ok" and rec["cost_nano"] > 0, rec
    print(f"smoke: {answer['choices'][0]['message']['content']!r} booked as {call_id}, "
          f"cost ${rec['cost_nano'] / 1e9:.9f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=int(os.environ.get("TOLLGATE_PORT", "8081")),
                    help="first port; functions use PORT, PORT+1, ... (default 8081)")
    ap.add_argument("--smoke", action="store_true", help="check one call end to end, then stop")
    args = ap.parse_args()

    procs: list[subprocess.Popen[bytes]] = []
    emulator = Emulator(log_path=ROOT / ".local" / "emulator.log")
    fake: FakeUpstream | None = None
    (ROOT / ".local").mkdir(exist_ok=True)
    try:
        print("starting the Firestore emulator ...", flush=True)
        emulator.start()
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
        real_key = os.environ.get("OPENAI_API_KEY")
        if real_key:
            base_url = os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
            upstream_key = real_key
        else:
            fake = FakeUpstream(port=free_port(), valid_keys=(FAKE_KEY,)).start()
            base_url, upstream_key = fake.base_url, FAKE_KEY
        secrets_file = ROOT / ".local" / "secrets.json"
        secrets_file.unlink(missing_ok=True)
        db = firestore.Client(project=PROJECT, database="tollgate")
        admin_token = "tga_" + secrets.token_urlsafe(24)
        keys = seed(db, secrets_file, upstream_key, base_url, admin_token)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TOLLGATE_GCP_PROJECT": PROJECT,
               "OPENAI_BASE_URL": base_url, "TOLLGATE_SECRET_BACKEND": "local",
               "TOLLGATE_SECRETS_FILE": str(secrets_file)}
        env.pop("OPENAI_API_KEY", None)  # the functions read keys from the secret store only
        urls = {}
        for i, target in enumerate(FUNCTIONS):
            port = args.port + i
            procs.append(start_function(target, port, env))
            urls[target] = f"http://127.0.0.1:{port}"
        for url in urls.values():
            _wait_http(url + "/")
        _print_banner(urls, keys, admin_token, emulator.host, base_url, fake is not None)
        if args.smoke:
            smoke(urls["openai"], keys["alice"], db)
            return 0
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        # A shell starts background jobs with SIGINT ignored; Ctrl-C must still stop us.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("a function process exited; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(p.pid, signal.SIGKILL)
        if fake is not None:
            fake.stop()
        emulator.stop()
        print("stopped.", flush=True)


def _print_banner(urls: dict[str, str], keys: dict[str, str], admin_token: str, emu: str,
                  upstream: str, fake: bool) -> None:
    o = urls["openai"]
    body = '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}'
    curl = (f"curl -s {o}/openai -H {shlex.quote('Authorization: alice ' + keys['alice'])} "
            f"-H 'Content-Type: application/json' -d {shlex.quote(body)}")
    print(f"""
Tollgate is running (Ctrl-C stops everything).
  openai function : {o}          (SDK base_url: {o}/v1)
  admin function  : {urls['admin']}          (admin token: {admin_token})
  log page        : {urls['log']}/log      (paste a key to see its calls)
  Firestore       : emulator at {emu}, project {PROJECT}
  upstream        : {upstream}{'  (fake upstream: no OPENAI_API_KEY set)' if fake else ''}
  demo project    : 'demo', models {', '.join(DEMO_MODELS)}, budget $5/month
  keys (shown once): alice (lead) {keys['alice']}
                     bob          {keys['bob']}

Try it:
  {curl}

Admin CLI (same shell):
  export TOLLGATE_ADMIN_URL={urls['admin']} TOLLGATE_ADMIN_TOKEN={admin_token}
  .venv/bin/python -m functions.cli usage --group-by user

Or with the SDK (pip install openai):
  from openai import OpenAI
  client = OpenAI(base_url="{o}/v1", api_key="{keys['alice']}")
  print(client.chat.completions.create(
      model="gpt-4o-mini", messages=[{{"role": "user", "content": "Hi"}}]).choices[0].message)
""", flush=True)


if __name__ == "__main__":
    sys.exit(main())
