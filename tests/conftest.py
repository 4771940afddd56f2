"""Fixtures: a real Firestore emulator per session, a fresh emulator project per test,
a loopback OpenAI-compatible upstream, and a seeded Tollgate world.

Isolation is by project id (emulator data is per project), not by reset: a reset
fails while an abandoned transaction holds locks (platform notes, finding 6).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from google.cloud import firestore
from google.cloud.firestore import Increment
from google.cloud.firestore_v1.base_query import FieldFilter
from werkzeug.serving import WSGIRequestHandler, make_server

from functions.core import ids, pricing
from functions.core.budget import period_key
from functions.core.holds import HoldPlan, Outcome, usage_record
from functions.store.membership import Membership
from functions.store.provision import Provisioner
from functions.store.secrets import LocalSecretStore
from tests.emulator import Emulator
from tests.fake_upstream import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM_SECRET = "sk-fake-upstream-org-key-0001"
ADMIN_TOKEN = "tga_test_admin_token_0123456789abcdef"
EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
# $ per 1M tokens: (input, cached input, output); gpt-4o-mini's real list prices.
MINI = ("0.15", "0.075", "0.60")


def make_price(
    inp: str, cached: str | None, out: str, since: datetime = EPOCH, **tiers: pricing.Rates
) -> pricing.Price:
    rates = pricing.Rates(
        input=pricing.usd_per_mtok_to_rate(inp),
        output=pricing.usd_per_mtok_to_rate(out),
        cached_input=pricing.usd_per_mtok_to_rate(cached) if cached else None,
    )
    return pricing.Price(
        valid_from=since, valid_to=None, tiers={"default": rates, **tiers}, source="tests"
    )


@pytest.fixture(autouse=True)
def isolate_environment() -> Iterator[None]:
    """Functions read their configuration from the environment; restore it per test."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    host = os.environ.get("TOLLGATE_TEST_EMULATOR")  # reuse a running one while developing
    if host:
        yield host
        return
    emu = Emulator(log_path=tmp_path_factory.mktemp("emulator") / "emulator.log").start()
    try:
        yield emu.host
    finally:
        emu.stop()


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(valid_keys=(UPSTREAM_SECRET,)) as fake:
        yield fake


@pytest.fixture
def upstream(fake_upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    fake_upstream.reset()
    fake_upstream.valid_keys = {UPSTREAM_SECRET}
    yield fake_upstream
    fake_upstream.reset()


@pytest.fixture
def gcp_project() -> str:
    return "test-" + secrets.token_hex(6)


@pytest.fixture
def db(emulator: str, gcp_project: str) -> Iterator[firestore.Client]:
    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator
    client = firestore.Client(project=gcp_project, database="tollgate")
    yield client
    client.close()


@dataclass
class World:
    """A seeded project: ``demo`` with users alice (lead) and bob, two models priced."""

    db: firestore.Client
    prov: Provisioner
    members: Membership
    project: str
    keys: dict[str, str]
    upstream: FakeUpstream
    secrets_file: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def usage(self) -> list[dict[str, Any]]:
        SERVED.wait_idle()
        return [s.to_dict() or {} for s in self.db.collection("usage").stream()]

    def live_holds(self) -> list[dict[str, Any]]:
        SERVED.wait_idle()
        q = self.db.collection("holds").where(filter=FieldFilter("state", "==", "live"))
        return [s.to_dict() or {} for s in q.stream()]

    def counters(self) -> dict[str, dict[str, Any]]:
        """Every counter as the spend pages see it (``grants.exact_states``: costs settled
        inside a still-open escrow grant count as spent)."""
        SERVED.wait_idle()
        from functions.store.grants import exact_states

        out = {}
        for s in self.db.collection("counters").stream():
            d = s.to_dict() or {}
            st = exact_states(self.db, str(d.get("project")), [s.id])[s.id]
            out[s.id] = {
                **d,
                "spent": st.spent,
                "held": st.held,
                "inflight": st.inflight,
                "escrow": st.escrow,
            }
        return out

    def counter(self, scope: str, *parts: str) -> dict[str, Any]:
        from functions.core.ids import doc_id

        return self.counters().get(doc_id(scope, *parts), {})


T = TypeVar("T")


def seed_usage(
    world: World,
    call_id: str,
    *,
    at: datetime,
    project: str = "demo",
    user: str = "bob",
    model: str = "gpt-4o-mini",
    cost_nano: int = 1_500_000,
    tag: str | None = None,
    key_name: str = "default",
) -> None:
    """A usage record exactly as settlement writes it (``holds.usage_record``), and its
    spend on the project and member counters of its period, as settlement books it, so
    the pages' budget bars agree with the calls."""
    plan = HoldPlan(
        call_id=call_id,
        project=project,
        user=user,
        key_name=key_name,
        model=model,
        route="chat",
        budget_period="monthly",
        period_key=period_key("monthly", at),
        limits=(),
        estimate_nano=cost_nano,
        admitted_at=at,
        expires_at=at + timedelta(minutes=10),
        tag=tag,
    )
    outcome = Outcome(
        status="ok",
        cost_nano=cost_nano,
        upstream_model=model,
        latency_ms=321,
        usage=pricing.Usage(input_tokens=1200, cached_tokens=200, output_tokens=300),
    )
    world.db.collection("usage").document(call_id).set(
        usage_record(plan, outcome, at + timedelta(seconds=1))
    )
    for counter in (
        ids.project_counter(project, plan.period_key),
        ids.member_counter(project, user, plan.period_key),
    ):
        world.db.collection("counters").document(counter).set(
            {
                "project": project,
                "spent": Increment(cost_nano),
                "held": Increment(0),
                "inflight": Increment(0),
            },
            merge=True,
        )


def burst(n: int, call: Callable[[], T], timeout_s: float = 120.0) -> list[T]:
    """n calls released together by a barrier, one thread each; their results. An
    exception in a call is raised here, in the test's thread, where pytest sees it."""
    start = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = ("ok", call())
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            results[i] = ("raised", exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout_s
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), f"calls still running after {timeout_s} s"
    for kind, value in results:
        if kind == "raised":
            raise value
    return [value for _, value in results]


def wait_for_usage(world: World, n: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The usage records once there are at least n (a stream books after its last byte,
    which a client may see before the settlement lands)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recs = world.usage()
        if len(recs) >= n:
            return recs
        time.sleep(0.05)
    raise AssertionError("no usage record was booked")


@pytest.fixture
def world(
    db: firestore.Client,
    gcp_project: str,
    upstream: FakeUpstream,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[World]:
    secrets_file = tmp_path / "secrets.json"
    os.environ.update(
        {
            "TOLLGATE_GCP_PROJECT": gcp_project,
            "OPENAI_BASE_URL": upstream.base_url,
            "TOLLGATE_SECRET_BACKEND": "local",
            "TOLLGATE_SECRETS_FILE": str(secrets_file),
            "TOLLGATE_UPSTREAM_TIMEOUT_S": "5",
        }
    )
    store = LocalSecretStore(secrets_file)
    store.put("tollgate-admin-tokens", json.dumps({"root": ADMIN_TOKEN}))
    prov = Provisioner(db, store)
    members = Membership(db)
    prov.put_external_key("main", UPSTREAM_SECRET)
    prov.add_price("gpt-4o-mini", make_price(*MINI))
    prov.add_price("text-embedding-3-small", make_price("0.02", None, "0"))
    for uid in ("alice", "bob"):
        prov.create_user(uid, uid.title(), f"{uid}@example.com")
    prov.create_project(
        "demo",
        external_key="main",
        budget_usd="10",
        allowed_models=["gpt-4o-mini", "text-embedding-3-small"],
        default_max_output_tokens=256,
    )
    keys = {
        "alice": members.add_member("demo", "alice", role="lead"),
        "bob": members.add_member("demo", "bob"),
    }
    w = World(db, prov, members, "demo", keys, upstream, secrets_file)
    yield w
    from functions.admin.app import admin_for
    from functions.proxy.app import proxy_for

    proxy_for.cache_clear()
    admin_for.cache_clear()
    if "leaves_holds" not in request.keywords:
        # Like Flask's leak detector: a test that leaves budget held has found a bug.
        assert w.live_holds() == [], "a call left a live hold behind"


def _app(target: str) -> Any:
    import functions_framework
    from flask.testing import FlaskClient

    class Client(FlaskClient):
        """Buffered unless told otherwise: the body is read and the response closed
        before ``post`` returns, as a WSGI server does after the last byte. A plain
        answer is settled in its ``close()``, so a test sees it booked. Stream tests
        that read event by event pass ``buffered=False``."""

        def open(self, *args: Any, buffered: bool = True, **kwargs: Any) -> Any:
            return super().open(*args, buffered=buffered, **kwargs)

    app = functions_framework.create_app(target=target, source=str(ROOT / "functions" / "main.py"))
    app.test_client_class = Client
    return app


class _Unfinished:
    """Requests the loopback servers answered but have not finished: a plain answer is
    settled in its ``close()``, after the client has its last byte (as on Cloud Run).
    ``World``'s readers wait (a bounded while) until every request has finished, so a
    test that reads the books right after an answer sees it booked."""

    def __init__(self) -> None:
        self.n = 0
        self.cv = threading.Condition()

    def wrap(self, app: Any) -> Any:
        def served(environ: Any, start_response: Any) -> Any:
            with self.cv:
                self.n += 1
            try:
                body = _Closing(app(environ, start_response), self._done)
                environ[_BODY] = body  # for _Handler.connection_dropped
                return body
            except BaseException:
                self._done()
                raise

        return served

    def _done(self) -> None:
        with self.cv:
            self.n -= 1
            self.cv.notify_all()

    def wait_idle(self, timeout_s: float = 5.0) -> None:
        with self.cv:
            self.cv.wait_for(lambda: self.n <= 0, timeout_s)


SERVED = _Unfinished()


class _Closing:
    """A response body whose ``close()`` runs once, however often it is asked."""

    def __init__(self, body: Any, done: Callable[[], None]) -> None:
        self._body = body
        self._done = done
        self._closed = False
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._body)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if hasattr(self._body, "close"):
                self._body.close()
        finally:
            self._done()


class _Handler(WSGIRequestHandler):
    """werkzeug's dev-server handler, but a response is closed even when the client's
    socket resets while the server drains it: werkzeug reads what is left of the request
    in ``execute``'s ``finally`` *before* it calls ``close()``, so a reset there skipped
    ``close()``. That request then stayed unfinished for good and every later
    ``wait_idle`` of the process waited its full 5 s (seen under two xdist workers:
    ~10 s added to each of a dozen later tests). gunicorn, as on Cloud Run, always
    closes."""

    def connection_dropped(self, error: BaseException, environ: Any = None) -> None:
        body = (environ or {}).get(_BODY)
        if body is not None:
            body.close()


_BODY = "tollgate.tests.body"


def _serve(app: Any) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, SERVED.wrap(app), threaded=True, request_handler=_Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


@pytest.fixture
def memory_admin(upstream: FakeUpstream, tmp_path: Path) -> Iterator[Any]:
    """The proxy, admin API and log page over in-memory parts (tests/memory_world.py)."""
    from tests.memory_world import memory_admin_world

    w = memory_admin_world(upstream, tmp_path)
    yield w
    assert w.proxy.ledger.holds == {}, "a call left a live hold behind"


@pytest.fixture
def client(world: World) -> Any:
    """The real ``openai`` entry point through functions-framework's app."""
    return _app("openai").test_client()


@pytest.fixture
def proxy_url(world: World) -> Iterator[str]:
    """The ``openai`` function served over real HTTP on loopback (for the SDK)."""
    yield from _serve(_app("openai"))


@pytest.fixture
def admin_client(world: World) -> Any:
    """The ``admin`` entry point; send ``headers=admin_auth()``."""
    return _app("admin").test_client()


@pytest.fixture
def admin_url(world: World) -> Iterator[str]:
    yield from _serve(_app("admin"))


@pytest.fixture
def log_client(world: World) -> Any:
    return _app("log").test_client()


@pytest.fixture
def log_url(world: World) -> Iterator[str]:
    """The ``log`` function (page and JSON API) over real HTTP on loopback."""
    yield from _serve(_app("log"))


def admin_auth(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# the query shapes xdist's workers saw (filled on the controller as each worker ends)
_WORKER_SHAPES: list[Any] = []


@pytest.hookimpl(optionalhook=True)  # an xdist hook: only called when tests run in workers
def pytest_testnodedown(node: Any, error: Any) -> None:
    _WORKER_SHAPES.extend(getattr(node, "workeroutput", {}).get("query_shapes", []))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every Firestore query any test made must be covered by a declared index: the
    emulator does not enforce indexes, production does (tests/test_indexes.py checks
    the reports; this catches the queries of every other path too). Under xdist each
    worker hands its shapes to the controller, which checks them all."""
    from functions.store import indexes

    shapes = indexes.seen()
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: plain tuples cross to the controller
        workeroutput["query_shapes"] = [
            (s.collection, list(s.equals), s.range_field, [list(o) for o in s.order])
            for s in shapes
        ]
        return
    for collection, equals, range_field, order in _WORKER_SHAPES:
        shapes.add(
            indexes.Shape(collection, tuple(equals), range_field, tuple(tuple(o) for o in order))
        )
    declared = indexes.declared()
    missing = sorted(
        {
            str(indexes.needed_index(s)) + " on " + s.collection
            for s in shapes
            if not indexes.covered(s, declared)
        }
    )
    if missing:
        print("\nqueries without a declared composite index:\n  " + "\n  ".join(missing))
        session.exitstatus = 1
