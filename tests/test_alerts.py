"""Budget alerts that reach people: bodies Slack and Google Chat accept as they are
(checked by loopback webhooks that validate like those services do), the format per
config, retries with backoff (quick ones in the call, the rest by the sweep), never
on a 4xx, and the crossing call answered before its webhook is posted to."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from functions.core.alerting import AlertConfig, backoff_s, body_for, guess_format
from functions.core.budget import Limit
from functions.store.alerts import MAX_ATTEMPTS, Alerts
from tests.conftest import ADMIN_TOKEN, admin_auth, bearer
from tests.fake_upstream import InvalidJSON
from tollgate_cli import cli

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
LIMIT = Limit("project", "project 'demo'", "p|demo|2026-12", 10_000_000_000, "demo")
NOW = datetime(2026, 12, 20, 9, 0, tzinfo=UTC)
NINE_DECIMALS = re.compile(r"\d\.\d{7,}")

# --- webhooks on loopback that check bodies as Slack and Google Chat do ------------------

# the top-level fields of a Slack incoming-webhook message; anything else is refused
SLACK_KEYS = {
    "text",
    "blocks",
    "attachments",
    "mrkdwn",
    "username",
    "icon_emoji",
    "icon_url",
    "channel",
    "thread_ts",
    "unfurl_links",
    "unfurl_media",
    "link_names",
    "reply_broadcast",
    "metadata",
}
TEXT_TYPES = {"mrkdwn", "plain_text"}


def _slack_text_object(o: Any, max_len: int) -> bool:
    return (
        isinstance(o, dict)
        and set(o) <= {"type", "text", "emoji", "verbatim"}
        and o.get("type") in TEXT_TYPES
        and isinstance(o.get("text"), str)
        and 0 < len(o["text"]) <= max_len
    )


def _slack_section(b: Any) -> bool:
    if not isinstance(b, dict) or b.get("type") != "section":
        return False
    if set(b) - {"type", "text", "fields", "block_id"} or not ("text" in b or "fields" in b):
        return False
    fields = b.get("fields", [])
    return (
        (("text" not in b) or _slack_text_object(b["text"], 3000))
        and isinstance(fields, list)
        and len(fields) <= 10
        and all(_slack_text_object(f, 2000) for f in fields)
    )


def slack_problem(body: Any) -> str | None:
    """None if Slack's incoming webhook takes ``body``, else the error it answers."""
    if not isinstance(body, dict) or set(body) - SLACK_KEYS:
        return "invalid_payload"
    if not isinstance(body.get("text"), str) or not body["text"].strip():
        return "no_text"
    blocks = body.get("blocks", [])
    if not isinstance(blocks, list) or len(blocks) > 50 or not all(map(_slack_section, blocks)):
        return "invalid_blocks"
    return None


def chat_problem(body: Any) -> str | None:
    """None if a Google Chat space webhook takes ``body`` (a Message: text and/or
    cardsV2 with decoratedText widgets here), else the reason it refuses it."""
    if not isinstance(body, dict) or set(body) - {"text", "cardsV2", "thread"}:
        return "Invalid JSON payload received. Unknown name"
    if not body.get("text") and not body.get("cardsV2"):
        return "Message cannot be empty."
    for c in body.get("cardsV2", []):
        card = c.get("card") if isinstance(c, dict) else None
        if set(c) - {"cardId", "card"} or not isinstance(card, dict):
            return "Invalid cardsV2"
        for section in card.get("sections", []):
            for w in section.get("widgets", []):
                d = w.get("decoratedText")
                if set(w) != {"decoratedText"} or not isinstance(d.get("text"), str):
                    return "Invalid widget"
    return None


class Hook:
    """A webhook on loopback. Each POST is recorded; a body ``check`` refuses is answered
    400 (as the service would), otherwise the next of ``statuses`` (then 200) after
    ``delay_s``; a 429 carries ``retry_after``."""

    def __init__(
        self,
        check: Callable[[Any], str | None] | None = None,
        statuses: tuple[int, ...] = (),
        delay_s: float = 0.0,
        retry_after: str | None = None,
    ) -> None:
        self.posts: list[Any] = []
        self.answers: list[int] = []
        self.statuses = list(statuses)
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw
                outer.posts.append(body)
                problem = check(body) if check else None
                status = 400 if problem else (outer.statuses.pop(0) if outer.statuses else 200)
                time.sleep(delay_s)
                outer.answers.append(status)
                data = (problem or ("ok" if status == 200 else "error")).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                if retry_after and status == 429:
                    self.send_header("Retry-After", retry_after)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T0/B0/secret"


@pytest.fixture
def hooks() -> Iterator[list[Hook]]:
    made: list[Hook] = []
    yield made
    for h in made:
        h.server.shutdown()


def hook(hooks: list[Hook], **kw: Any) -> Hook:
    h = Hook(**kw)
    hooks.append(h)
    return h


def alert_doc(db: Any, doc_id: str = "p|demo|2026-12|80") -> dict[str, Any]:
    return db.collection("alerts_sent").document(doc_id).get().to_dict()


def notify(db: Any, url: str, fmt: str = "json", spent: int = 8_020_000_000) -> int:
    return Alerts(db).notify(
        project="demo",
        period="2026-12",
        period_kind="monthly",
        config=AlertConfig(url, fmt),
        crossed=[(LIMIT, 80, spent)],
        now=NOW,
    )


def sweep(admin_client: Any) -> int:
    r = admin_client.post("/sweep", headers=admin_auth())
    assert r.status_code == 200
    return int(r.get_json()["alerts_resent"])


def configure(admin_client: Any, url: str | None, fmt: str = "json") -> None:
    """The project's config, which the sweep posts by (``notify`` is given its own)."""
    r = admin_client.put(
        "/projects/demo/alerts", headers=admin_auth(), json={"webhook_url": url, "format": fmt}
    )
    assert r.status_code == 200, r.get_json()


def make_due(db: Any, doc_id: str = "p|demo|2026-12|80") -> None:
    db.collection("alerts_sent").document(doc_id).update(
        {"next_attempt_at": datetime.now(UTC) - timedelta(seconds=1)}
    )


# --- through the proxy: the call that crosses ----------------------------------------------


def crossing_setup(client: Any, admin_client: Any, world: Any, alerts: dict[str, Any]) -> str:
    """Every call costs exactly its hold, c (as in test_callhooks); one call, then a
    budget of 4c: the next call takes spend from c to 2c and crosses 50 %. Returns the
    alert's document id."""
    from functions.core import tokens

    world.upstream.bill_cap = True
    world.upstream.prompt_tokens = lambda path, body: tokens.estimate_input_tokens(
        "chat", body, body["model"]
    )
    world.prov.update_project("demo", default_max_output_tokens=10)
    assert (
        client.post(
            "/v1/chat/completions", json=CHAT, headers=bearer(world.keys["bob"])
        ).status_code
        == 200
    )
    [first] = world.usage()
    world.prov.update_project("demo", budget_nano=4 * first["cost_nano"])
    r = admin_client.put(
        "/projects/demo/alerts", headers=admin_auth(), json={"thresholds": [50], **alerts}
    )
    assert r.status_code == 200, r.get_json()
    return f"p|demo|{first['period']}|50"


def test_the_crossing_call_posts_a_body_slack_accepts(client, admin_client, world, hooks):
    slack = hook(hooks, check=slack_problem)
    doc_id = crossing_setup(
        client, admin_client, world, {"webhook_url": slack.url, "format": "slack"}
    )
    r = client.post("/v1/chat/completions", json=CHAT, headers=bearer(world.keys["bob"]))
    assert r.status_code == 200
    assert slack.answers == [200], slack.posts
    text = slack.posts[0]["text"]
    period = doc_id.split("|")[2]
    assert text.startswith("Tollgate: project 'demo' has spent $0.")
    assert f"monthly budget (50 % alert threshold crossed), period {period}." in text
    assert not NINE_DECIMALS.search(text)
    doc = alert_doc(world.db, doc_id)
    assert (doc["delivered"], doc["attempts"], "next_attempt_at" in doc) == (True, 1, False)
    # the same alert in the old (json) shape is what Slack refuses
    old = {
        k: doc[k]
        for k in (
            "project",
            "limit",
            "scope",
            "user",
            "model",
            "period",
            "threshold_percent",
            "spent_usd",
            "budget_usd",
        )
    }
    assert slack_problem(old) == "invalid_payload"
    assert slack_problem(body_for("json", doc)) == "invalid_payload"


def test_a_soft_budget_alerts_like_a_hard_one_and_says_it_is_soft(
    client, admin_client, world, hooks
):
    slack = hook(hooks, check=slack_problem)
    doc_id = crossing_setup(
        client, admin_client, world, {"webhook_url": slack.url, "format": "slack"}
    )
    world.prov.update_project("demo", budget_soft=True)
    r = client.post("/v1/chat/completions", json=CHAT, headers=bearer(world.keys["bob"]))
    assert r.status_code == 200 and slack.answers == [200], slack.posts
    assert "monthly soft budget (50 % alert threshold crossed)" in slack.posts[0]["text"]
    assert alert_doc(world.db, doc_id)["soft"] is True


def test_the_crossing_call_is_answered_before_a_slow_webhook(client, admin_client, world, hooks):
    slow = hook(hooks, delay_s=3.0)
    doc_id = crossing_setup(client, admin_client, world, {"webhook_url": slow.url})
    r = client.post(
        "/v1/chat/completions", json=CHAT, headers=bearer(world.keys["bob"]), buffered=False
    )
    t0 = time.monotonic()
    body = json.loads(r.get_data())
    got_body_s = time.monotonic() - t0
    assert body["choices"] and got_body_s < 0.5
    assert slow.posts == []  # the whole answer is out before the webhook is called
    r.close()  # settlement and the alert run here, as after a WSGI server's last byte
    held_s = time.monotonic() - t0
    assert len(slow.posts) == 1
    # one try cut at the 1 s read timeout, no second one: the request is held well
    # under the 3 s of the webhook (and under the 2 s read timeout of before)
    assert held_s < 1.8, held_s
    doc = alert_doc(world.db, doc_id)
    assert (doc["delivered"], doc["attempts"], doc["last_error"]) == (False, 1, "ReadTimeout")
    assert doc["next_attempt_at"] > datetime.now(UTC) + timedelta(seconds=50)


def test_a_crossing_stream_ends_before_its_webhook_is_called(client, admin_client, world, hooks):
    slow = hook(hooks, delay_s=3.0)
    crossing_setup(client, admin_client, world, {"webhook_url": slow.url})
    r = client.post(
        "/v1/chat/completions",
        json={**CHAT, "stream": True},
        headers=bearer(world.keys["bob"]),
        buffered=False,
    )
    t0 = time.monotonic()
    body = r.get_data()  # every event and the end of the body: the stream settled
    assert b"[DONE]" in body and time.monotonic() - t0 < 0.5
    assert slow.posts == [] and len(world.usage()) == 2
    r.close()  # the WSGI server's close(), after the chunked body's last byte
    assert len(slow.posts) == 1


# --- formats --------------------------------------------------------------------------------


def test_google_chat_gets_text_and_a_card(db, hooks):
    chat = hook(hooks, check=chat_problem)
    assert notify(db, chat.url, "google_chat") == 1
    assert chat.answers == [200], chat.posts
    [body] = chat.posts
    assert body["text"] == (
        "Tollgate: project 'demo' has spent $8.02 of its $10.00 monthly "
        "budget (80 % alert threshold crossed), period 2026-12."
    )
    widgets = body["cardsV2"][0]["card"]["sections"][0]["widgets"]
    facts = {w["decoratedText"]["topLabel"]: w["decoratedText"]["text"] for w in widgets}
    assert facts["Spent"] == "$8.02" and facts["Threshold"] == "80 %"
    # what Chat refuses: Slack's blocks, or the structured json fields
    assert chat_problem(body_for("slack", alert_doc(db))) is not None
    assert chat_problem(body_for("json", alert_doc(db))) is not None


def test_slack_body_escapes_and_holds_the_facts_as_fields(db, hooks):
    slack = hook(hooks, check=slack_problem)
    member = Limit(
        "member_model",
        "member 'bob' on model 'a<b>&c'",
        "pum|demo|bob|x|2026-12",
        2_000_000_000,
        "demo",
        "bob",
        "a<b>&c",
    )
    Alerts(db).notify(
        project="demo",
        period="2026-12",
        period_kind="weekly",
        config=AlertConfig(slack.url, "slack"),
        crossed=[(member, 100, 2_000_000_001)],
        now=NOW,
    )
    assert slack.answers == [200]
    [body] = slack.posts
    assert body["text"] == (
        "Tollgate: member 'bob' on model 'a&lt;b&gt;&amp;c' in project "
        "'demo' has spent $2.00 of its $2.00 weekly budget (100 % alert "
        "threshold crossed), period 2026-12."
    )
    fields = [f["text"] for f in body["blocks"][1]["fields"]]
    assert "*Spent*\n$2.00" in fields and "*Threshold*\n100 %" in fields


def test_json_keeps_the_structured_fields_and_adds_text(db, hooks):
    plain = hook(hooks)
    notify(db, plain.url)
    [body] = plain.posts
    assert body == {
        "project": "demo",
        "limit": "project 'demo'",
        "scope": "project",
        "user": None,
        "model": None,
        "period": "2026-12",
        "period_kind": "monthly",
        "threshold_percent": 80,
        "spent_usd": "8.020000000",
        "spent_nano": 8_020_000_000,
        "budget_usd": "10.000000000",
        "budget_nano": 10_000_000_000,
        "text": "Tollgate: project 'demo' has spent $8.02 of its $10.00 monthly budget "
        "(80 % alert threshold crossed), period 2026-12.",
    }


def test_format_is_validated_and_guessed_from_the_webhook_host(admin_client, world):
    def put(body: dict[str, Any]) -> Any:
        return admin_client.put("/projects/demo/alerts", headers=admin_auth(), json=body)

    assert (
        admin_client.get("/projects/demo/alerts", headers=admin_auth()).get_json()["config"][
            "format"
        ]
        == "json"
    )
    r = put({"webhook_url": "https://example.com/h", "format": "teams"})
    err = r.get_json()["error"]
    assert r.status_code == 400 and err["param"] == "format" and "slack" in err["message"]
    assert err["type"] == "invalid_request_error"
    cases = {
        "https://hooks.slack.com/services/T0/B0/X": "slack",
        "https://chat.googleapis.com/v1/spaces/AAA/messages?key=k&token=t": "google_chat",
        "https://hooks.example.com/t": "json",
    }
    for url, fmt in cases.items():
        assert put({"webhook_url": url}).get_json()["config"]["format"] == fmt
        assert guess_format(url) == fmt
    r = put({"webhook_url": "https://hooks.slack.com/services/T0/B0/X", "format": "json"})
    assert r.get_json()["config"] == {
        "webhook_url": "https://hooks.slack.com/services/T0/B0/X",
        "thresholds": [50, 80, 100],
        "format": "json",
    }


# --- retries ----------------------------------------------------------------------------------


def test_a_failing_webhook_is_retried_quickly_then_by_the_sweep_with_backoff(
    db, admin_client, world, hooks
):
    flaky = hook(hooks, check=slack_problem, statuses=(503, 503, 503))
    configure(admin_client, flaky.url, "slack")
    before = datetime.now(UTC)
    notify(db, flaky.url, "slack")
    assert flaky.answers == [503, 503]  # two quick tries in the call
    doc = alert_doc(db)
    assert (doc["delivered"], doc["attempts"], doc["last_error"]) == (False, 2, "http 503")
    wait = (doc["next_attempt_at"] - before).total_seconds()
    assert backoff_s(2) == 120 and 115 <= wait <= 125

    assert sweep(admin_client) == 0  # not due yet
    make_due(db)
    before = datetime.now(UTC)
    assert sweep(admin_client) == 1
    doc = alert_doc(db)
    assert flaky.answers == [503, 503, 503] and doc["attempts"] == 3
    wait = (doc["next_attempt_at"] - before).total_seconds()
    assert 235 <= wait <= 245  # doubled

    make_due(db)
    assert sweep(admin_client) == 1
    doc = alert_doc(db)
    assert flaky.answers == [503, 503, 503, 200]
    assert (doc["delivered"], doc["attempts"]) == (True, 4)
    assert "next_attempt_at" not in doc and "last_error" not in doc
    assert flaky.posts[-1] == flaky.posts[0]  # the same message, rebuilt from the record
    assert sweep(admin_client) == 0


def test_a_4xx_is_not_retried(db, admin_client, world, hooks):
    gone = hook(hooks, statuses=(404,))
    configure(admin_client, gone.url)
    notify(db, gone.url)
    assert gone.answers == [404]
    doc = alert_doc(db)
    assert (doc["delivered"], doc["attempts"], doc["last_error"]) == (False, 1, "http 404")
    assert "next_attempt_at" not in doc
    assert sweep(admin_client) == 0 and len(gone.posts) == 1
    # a body Slack refuses is a 4xx too: posting it again cannot help
    slack = hook(hooks, check=slack_problem)
    Alerts(db).notify(
        project="demo",
        period="2026-12",
        period_kind="monthly",
        config=AlertConfig(slack.url, "json"),
        crossed=[(LIMIT, 50, 5_000_000_000)],
        now=NOW,
    )
    assert slack.answers == [400]
    assert "next_attempt_at" not in alert_doc(db, "p|demo|2026-12|50")


def test_a_429_waits_its_retry_after_and_the_sweep_gives_up_at_last(db, admin_client, world, hooks):
    busy = hook(hooks, statuses=(429,) * 10, retry_after="600")
    configure(admin_client, busy.url)
    before = datetime.now(UTC)
    notify(db, busy.url)
    assert busy.answers == [429]  # told to wait 10 minutes: no quick second try
    doc = alert_doc(db)
    assert 595 <= (doc["next_attempt_at"] - before).total_seconds() <= 605
    assert backoff_s(5) == 960 and backoff_s(20) == 3600 and backoff_s(1, 10**6) == 3600
    db.collection("alerts_sent").document("p|demo|2026-12|80").update(
        {"attempts": MAX_ATTEMPTS - 1}
    )
    make_due(db)
    assert sweep(admin_client) == 1
    doc = alert_doc(db)
    assert (doc["attempts"], doc["delivered"], "next_attempt_at" in doc) == (
        MAX_ATTEMPTS,
        False,
        False,
    )
    assert sweep(admin_client) == 0 and len(busy.posts) == 2


def test_the_sweep_posts_to_the_webhook_configured_now(db, admin_client, world, hooks):
    dead, fixed = hook(hooks, statuses=(500,) * 4), hook(hooks, check=slack_problem)
    notify(db, dead.url)
    configure(admin_client, fixed.url, "slack")
    make_due(db)
    assert sweep(admin_client) == 1
    assert fixed.answers == [200] and alert_doc(db)["delivered"] is True
    # no webhook any more: nothing to post to, the alert stops waiting
    Alerts(db).notify(
        project="demo",
        period="2026-12",
        period_kind="monthly",
        config=AlertConfig(dead.url),
        crossed=[(LIMIT, 90, 9 * 10**9)],
        now=NOW,
    )
    configure(admin_client, None)
    make_due(db, "p|demo|2026-12|90")
    assert sweep(admin_client) == 0
    doc = alert_doc(db, "p|demo|2026-12|90")
    assert (doc["delivered"], doc["last_error"], "next_attempt_at" in doc) == (
        False,
        "no webhook configured",
        False,
    )
    assert dead.answers == [500] * 4


def test_a_recorded_alert_nobody_posted_is_posted_by_the_sweep(db, admin_client, world, hooks):
    """An instance that recorded an alert and died before posting it: its claim lapses
    and the sweep posts it."""
    ok = hook(hooks)
    configure(admin_client, ok.url)
    pending = Alerts(db).record(
        project="demo",
        period="2026-12",
        period_kind="monthly",
        config=AlertConfig(ok.url),
        crossed=[(LIMIT, 80, 8 * 10**9)],
        now=NOW,
    )
    assert len(pending) == 1 and ok.posts == []
    assert sweep(admin_client) == 0  # claimed by its poster for a while
    make_due(db)
    assert sweep(admin_client) == 1 and len(ok.posts) == 1
    assert alert_doc(db)["delivered"] is True


# --- never before the answer ------------------------------------------------------------------


def test_an_error_answer_that_crosses_is_out_before_its_webhook(client, admin_client, world, hooks):
    """An error path settles before its answer exists (here a garbled upstream answer,
    booked at the hold): the post still waits for that answer's close()."""
    slow = hook(hooks)
    crossing_setup(client, admin_client, world, {"webhook_url": slow.url})
    world.upstream.push(InvalidJSON())
    r = client.post(
        "/v1/chat/completions", json=CHAT, headers=bearer(world.keys["bob"]), buffered=False
    )
    assert r.status_code == 502 and r.get_json()["error"]["code"] == "upstream_bad_response"
    assert r.headers["x-tollgate-call-id"]
    assert slow.posts == []  # settled and crossed, but the answer is not closed yet
    r.close()
    assert len(slow.posts) == 1


# --- the CLI ----------------------------------------------------------------------------------


def test_cli_sets_the_format_and_keeps_what_it_is_not_given(admin_url, world, monkeypatch, capsys):
    monkeypatch.setenv("TOLLGATE_ADMIN_URL", admin_url)
    monkeypatch.setenv("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)

    def run(*argv: str) -> str:
        capsys.readouterr()
        assert cli.main(list(argv)) == 0
        return capsys.readouterr().out

    out = run(
        "project",
        "alerts",
        "demo",
        "--webhook",
        "https://hooks.example.com/t",
        "--thresholds",
        "80,100",
    )
    assert "format: json" in out
    out = run("project", "alerts", "demo", "--format", "google_chat")
    assert (
        "webhook: https://hooks.example.com/t" in out
        and "format: google_chat" in out
        and "thresholds: 80 %, 100 %" in out
    )
    out = run("project", "alerts", "demo", "--thresholds", "50")
    assert "format: google_chat" in out and "webhook: https://hooks.example.com/t" in out
    out = run("project", "alerts", "demo", "--webhook", "https://hooks.slack.com/services/X")
    assert "format: slack" in out and "thresholds: 50 %" in out  # guessed from the host
    out = run("project", "alerts", "demo", "--webhook", "")
    assert "webhook: (none" in out
