"""Firestore access for configuration: who a key belongs to and what they may do.

``Store`` is the narrow class between the rules and Firestore. The write side of
money (holds, settlement, sweep) lives in ``ledger.py``.

Collections (see docs/data-model.md): ``keys``, ``users``, ``members``,
``projects``, ``models``, ``limits``, ``external_keys``, ``counters``, ``holds``,
``usage``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import grpc
from google.cloud import firestore
from google.cloud.firestore_v1 import base_client
from google.cloud.firestore_v1.base_query import FieldFilter

from functions.core import ids
from functions.core.records import (
    CallContext,
    ExternalKeyRecord,
    KeyRecord,
    LimitRecord,
    MemberRecord,
    ModelRecord,
    ProjectRecord,
    UserRecord,
)
from functions.core.settings import Settings
from functions.store import indexes

CONFIG_TTL_S = 30.0
_RECENT_SIZE = 10_000  # per-instance cache of configuration that is not money


# Firestore's reads (BatchGetDocuments, RunQuery, aggregations) are gRPC unary-stream
# calls. By default grpc runs each on a "channel spin" thread that it starts for the call
# and lets die after it: ~1 ms of latency and ~0.4 ms of CPU on every get_all, measured
# on the emulator (p50 2.5 -> 1.6 ms for the 7 documents a call reads). This channel
# option makes grpc read the stream on the calling thread instead.
_SINGLE_THREADED_READS = (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1)


class _Client(firestore.Client):
    """firestore.Client with our channel options. The client has no parameter for them,
    so this repeats its channel set-up (google-cloud-firestore 2.34,
    ``BaseClient._firestore_api_helper``) with one option more."""

    def _firestore_api_helper(self, transport: Any, client_class: Any, client_module: Any) -> Any:
        if self._firestore_api_internal is None:
            if self._emulator_host is not None:
                # as the library does: insecure, and an "owner" token the emulator accepts
                channel = grpc.insecure_channel(
                    self._emulator_host,
                    options=[
                        ("Authorization", "Bearer owner"),
                        *base_client._GRPC_MSG_SIZE_OPTIONS,
                        _SINGLE_THREADED_READS,
                    ],
                )
            else:
                channel = transport.create_channel(
                    self._target,
                    credentials=self._credentials,
                    options=[*base_client._DEFAULT_CHANNEL_OPTIONS, _SINGLE_THREADED_READS],
                )
            self._transport = transport(host=self._target, channel=channel)
            self._firestore_api_internal = client_class(
                transport=self._transport, client_options=self._client_options
            )
            client_module._client_info = self._client_info
            _lend_retries(self._transport)
        return self._firestore_api_internal


def _lend_retries(transport: Any) -> None:
    """When a query's or an aggregation's stream fails and the caller gave no retry,
    google-cloud-firestore (2.x) asks ``transport.run_query._retry`` whether to resume -
    but that is the bare gRPC stub, which has no ``_retry``: a transient UNAVAILABLE or
    DEADLINE_EXCEEDED became an AttributeError (a 500 from the admin API's reports,
    seen under load) instead of a resumed stream. The retry the library means is its
    wrapped method's; lend it to the stub."""
    for name in ("run_query", "run_aggregation_query"):
        stub = getattr(transport, name)
        wrapped = transport._wrapped_methods.get(stub)
        if wrapped is not None and not hasattr(stub, "_retry"):
            stub._retry = wrapped._retry


def make_client(settings: Settings) -> firestore.Client:
    # On the emulator the client needs no credentials but must be told the project
    # explicitly, or it silently uses "google-cloud-firestore-emulator".
    return _Client(project=settings.gcp_project, database=settings.database)


class _KeyOwnerCache:
    """key hash -> (project, user). A key never changes owner, so this is safe to keep
    for the life of the instance; it lets one batched read fetch key, member, user,
    project, model and limits together. Revocation is still seen on the very next
    call because the key document itself is in that batch."""

    def __init__(self, size: int = 10_000) -> None:
        self._data: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> tuple[str, str] | None:
        with self._lock:
            owner = self._data.get(key_hash)
            if owner is not None:
                self._data.move_to_end(key_hash)
            return owner

    def put(self, key_hash: str, owner: tuple[str, str]) -> None:
        with self._lock:
            self._data[key_hash] = owner
            self._data.move_to_end(key_hash)
            while len(self._data) > self._size:
                self._data.popitem(last=False)


class Store:
    def __init__(self, db: firestore.Client) -> None:
        self.db = db
        self._owners = _KeyOwnerCache()
        # (key hash, model) -> the context its last call read: what the proxy guesses a
        # call's hold from while it reads the fresh one (proxy._guess); never trusted alone
        self._recent: OrderedDict[tuple[str, str | None], CallContext] = OrderedDict()
        self._ext: dict[str, tuple[ExternalKeyRecord | None, float]] = {}
        self._lock = threading.Lock()
        self.reads = 0  # documents read, for the benchmark's per-call counts

    def ref(self, collection: str, doc: str) -> firestore.DocumentReference:
        return self.db.collection(collection).document(doc)

    # --- the hot path -------------------------------------------------------

    def load_call_context(self, key_hash: str, model: str | None) -> CallContext | None:
        """Key, user, member, project, model and limits in one ``get_all`` round trip
        (two on an instance's first call with this key). None if the key is unknown."""
        owner = self._owners.get(key_hash)
        key_doc: Mapping[str, Any] | None = None
        if owner is None:
            snap = self.ref("keys", key_hash).get()
            self.reads += 1
            if not snap.exists:
                return None
            key_doc = snap.to_dict() or {}
            owner = (str(key_doc.get("project", "")), str(key_doc.get("user", "")))
            self._owners.put(key_hash, owner)
        project, user = owner
        refs = {
            "user": self.ref("users", user or "-"),
            "member": self.ref("members", ids.member(project, user)),
            "project": self.ref("projects", project or "-"),
        }
        if key_doc is None:
            refs["key"] = self.ref("keys", key_hash)
        if model:
            refs["model"] = self.ref("models", ids.model(model))
            refs["model_limit"] = self.ref("limits", ids.limit(project, model))
            refs["member_model_limit"] = self.ref("limits", ids.limit(project, model, user))
        by_path = {r.path: name for name, r in refs.items()}
        docs: dict[str, Mapping[str, Any]] = {}
        for snap in self.db.get_all(list(refs.values())):
            self.reads += 1
            if snap.exists:
                docs[by_path[snap.reference.path]] = snap.to_dict() or {}
        if key_doc is None:
            key_doc = docs.get("key")
            if key_doc is None:
                return None
        ctx = CallContext(
            key=KeyRecord.from_doc(key_hash, key_doc),
            user=UserRecord.from_doc(user, docs["user"]) if "user" in docs else None,
            member=MemberRecord.from_doc(docs["member"]) if "member" in docs else None,
            project=(
                ProjectRecord.from_doc(project, docs["project"]) if "project" in docs else None
            ),
            model=ModelRecord.from_doc(model, docs["model"]) if model and "model" in docs else None,
            model_limit=(
                LimitRecord.from_doc(docs["model_limit"]) if "model_limit" in docs else None
            ),
            member_model_limit=(
                LimitRecord.from_doc(docs["member_model_limit"])
                if "member_model_limit" in docs
                else None
            ),
        )
        with self._lock:
            self._recent[(key_hash, model)] = ctx
            self._recent.move_to_end((key_hash, model))
            while len(self._recent) > _RECENT_SIZE:
                self._recent.popitem(last=False)
        return ctx

    def origin_listed(self, origin: str) -> bool:
        """Whether a live project lists this browser origin (for a preflight, which
        carries no key). Single-field array-contains queries need no composite index."""
        q = (
            self.db.collection("projects")
            .where(filter=FieldFilter("cors_origins", "array_contains", origin))
            .limit(10)
        )
        for snap in q.stream():
            self.reads += 1
            if not (snap.to_dict() or {}).get("archived"):
                return True
        return False

    def recent_context(self, key_hash: str, model: str | None) -> CallContext | None:
        """The context the last call of this key and model read on this instance."""
        with self._lock:
            return self._recent.get((key_hash, model))

    def external_key(self, key_id: str) -> ExternalKeyRecord | None:
        """The external key record, cached per instance for ``CONFIG_TTL_S``: it only
        names the secret version to use, and a rotation pins a new version, so at
        worst a call in the next 30 s still uses the previous (still valid) version."""
        now = time.monotonic()
        with self._lock:
            hit = self._ext.get(key_id)
            if hit is not None and now - hit[1] < CONFIG_TTL_S:
                return hit[0]
        snap = self.ref("external_keys", key_id or "-").get()
        self.reads += 1
        rec = ExternalKeyRecord.from_doc(key_id, snap.to_dict() or {}) if snap.exists else None
        with self._lock:
            self._ext[key_id] = (rec, now)
        return rec

    def models(self, names: list[str] | None = None) -> list[ModelRecord]:
        """Model documents by id, or all of them (for a project allowing ``*``)."""
        if names is None:
            snaps = list(indexes.query(self.db, "models").stream())
        else:
            snaps = [
                s
                for s in self.db.get_all([self.ref("models", ids.model(m)) for m in names])
                if s.exists
            ]
        self.reads += len(snaps)
        out = []
        for s in snaps:
            d = s.to_dict() or {}
            out.append(ModelRecord.from_doc(str(d.get("id", s.id)), d))
        return out

    def response_tokens(self, project: str, response_id: str) -> int | None:
        """Input + output tokens recorded for an earlier Responses call of this project
        (for ``previous_response_id``), or None if unknown."""
        q = indexes.query(self.db, "usage", equals={"response_id": response_id}, limit=1)
        for snap in q.stream():
            self.reads += 1
            d = snap.to_dict() or {}
            if d.get("project") == project:
                return int(d.get("input_tokens", 0)) + int(d.get("output_tokens", 0))
        return None
