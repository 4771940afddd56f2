"""The stored entities as plain dataclasses, and their conversion from Firestore dicts.

Collections and fields are documented in ``docs/data-model.md``. Conversions are
pure so they can be tested without a database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from functions.core.budget import Topup
from functions.core.pricing import Price, price_from_doc


@dataclass(frozen=True)
class KeyRecord:
    key_hash: str
    project: str
    user: str
    name: str
    last4: str = ""
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    # limits of this key alone, inside its member's and project's (None/empty: none)
    budget_nano: int | None = None
    rpm: int | None = None
    allowed_models: tuple[str, ...] = ()
    budget_soft: bool = False

    @classmethod
    def from_doc(cls, key_hash: str, d: Mapping[str, Any]) -> KeyRecord:
        return cls(
            key_hash=key_hash,
            project=str(d.get("project", "")),
            user=str(d.get("user", "")),
            name=str(d.get("name", "")),
            last4=str(d.get("last4", "")),
            created_at=d.get("created_at"),
            expires_at=d.get("expires_at"),
            revoked_at=d.get("revoked_at"),
            last_used_at=d.get("last_used_at"),
            budget_nano=d.get("budget_nano"),
            rpm=d.get("rpm"),
            allowed_models=tuple(d.get("allowed_models") or ()),
            budget_soft=bool(d.get("budget_soft", False)),
        )


@dataclass(frozen=True)
class UserRecord:
    id: str
    name: str = ""
    email: str = ""
    disabled: bool = False

    @classmethod
    def from_doc(cls, uid: str, d: Mapping[str, Any]) -> UserRecord:
        return cls(
            uid, str(d.get("name", "")), str(d.get("email", "")), bool(d.get("disabled", False))
        )


def topups_of(d: Mapping[str, Any]) -> tuple[Topup, ...]:
    """A scope's top-ups, stored as ``[{"amount_nano", "until", "note", ...}]``."""
    return tuple(
        Topup(int(t["amount_nano"]), t["until"], str(t.get("note") or ""))
        for t in d.get("topups") or ()
        if isinstance(t, Mapping) and isinstance(t.get("until"), datetime)
    )


def windows_of(d: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    """A scope's extra budget windows, stored as ``[{"period", "budget_nano"}]``."""
    return tuple(
        (str(w["period"]), int(w["budget_nano"]))
        for w in d.get("windows") or ()
        if isinstance(w, Mapping) and w.get("budget_nano") is not None
    )


@dataclass(frozen=True)
class MemberRecord:
    project: str
    user: str
    role: str = "member"
    budget_nano: int | None = None
    budget_soft: bool = False
    windows: tuple[tuple[str, int], ...] = ()  # extra budgets: (period kind, nano)
    topups: tuple[Topup, ...] = ()  # added to the budget while in force

    @classmethod
    def from_doc(cls, d: Mapping[str, Any]) -> MemberRecord:
        return cls(
            str(d.get("project", "")),
            str(d.get("user", "")),
            str(d.get("role", "member")),
            d.get("budget_nano"),
            bool(d.get("budget_soft", False)),
            windows_of(d),
            topups_of(d),
        )


@dataclass(frozen=True)
class ProjectRecord:
    id: str
    name: str = ""
    external_key: str = ""
    budget_nano: int | None = None
    budget_period: str = "monthly"
    allowed_models: tuple[str, ...] = ()
    default_max_output_tokens: int | None = None
    archived: bool = False
    priced_tools: tuple[str, ...] = ()
    cache_enabled: bool = False
    cache_ttl_s: int = 3600
    rpm: int | None = None
    tpm: int | None = None
    clamp_output: bool = False  # lower the output cap to the budget left, not refuse
    budget_soft: bool = False  # the budget alerts and marks calls, never refuses
    windows: tuple[tuple[str, int], ...] = ()  # extra budgets: (period kind, nano)
    topups: tuple[Topup, ...] = ()  # added to the budget while in force
    cors_origins: tuple[str, ...] = ()  # browser origins whose pages may call
    alert_webhook: str | None = None
    alert_thresholds: tuple[int, ...] = ()
    alert_format: str = "json"

    def allows(self, model: str) -> bool:
        return "*" in self.allowed_models or model in self.allowed_models

    @classmethod
    def from_doc(cls, pid: str, d: Mapping[str, Any]) -> ProjectRecord:
        cache = d.get("cache") or {}
        alerts = d.get("alerts") or {}
        return cls(
            id=pid,
            name=str(d.get("name", "")),
            external_key=str(d.get("external_key", "")),
            budget_nano=d.get("budget_nano"),
            budget_period=str(d.get("budget_period", "monthly")),
            allowed_models=tuple(d.get("allowed_models") or ()),
            default_max_output_tokens=d.get("default_max_output_tokens"),
            archived=bool(d.get("archived", False)),
            priced_tools=tuple(d.get("priced_tools") or ()),
            cache_enabled=bool(cache.get("enabled", False)),
            cache_ttl_s=int(cache.get("ttl_s", 3600)),
            rpm=d.get("rpm"),
            tpm=d.get("tpm"),
            clamp_output=bool(d.get("clamp_output", False)),
            budget_soft=bool(d.get("budget_soft", False)),
            windows=windows_of(d),
            topups=topups_of(d),
            cors_origins=tuple(d.get("cors_origins") or ()),
            alert_webhook=alerts.get("webhook_url") or None,
            alert_thresholds=tuple(alerts.get("thresholds") or ()),
            alert_format=str(alerts.get("format") or "json"),
        )


@dataclass(frozen=True)
class ModelRecord:
    id: str
    prices: tuple[Price, ...] = ()
    created: int = 0

    @classmethod
    def from_doc(cls, mid: str, d: Mapping[str, Any]) -> ModelRecord:
        prices = tuple(price_from_doc(p) for p in d.get("prices") or ())
        return cls(mid, prices, int(d.get("created", 0)))


@dataclass(frozen=True)
class LimitRecord:
    budget_nano: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    budget_soft: bool = False

    @classmethod
    def from_doc(cls, d: Mapping[str, Any]) -> LimitRecord:
        return cls(
            d.get("budget_nano"), d.get("rpm"), d.get("tpm"), bool(d.get("budget_soft", False))
        )


@dataclass(frozen=True)
class ExternalKeyRecord:
    id: str
    secret_name: str
    secret_version: str = "latest"
    last4: str = ""
    base_url: str | None = None

    @classmethod
    def from_doc(cls, kid: str, d: Mapping[str, Any]) -> ExternalKeyRecord:
        return cls(
            kid,
            str(d.get("secret_name", "")),
            str(d.get("secret_version", "latest")),
            str(d.get("last4", "")),
            d.get("base_url") or None,
        )


@dataclass(frozen=True)
class CallContext:
    """Everything one proxied call needs to know, read in one batched get."""

    key: KeyRecord
    user: UserRecord | None
    member: MemberRecord | None
    project: ProjectRecord | None
    model: ModelRecord | None = None
    model_limit: LimitRecord | None = None
    member_model_limit: LimitRecord | None = None


@dataclass(frozen=True)
class Caller(CallContext):
    """A call's configuration once ``auth.check_context`` has passed it: the user, the
    membership and the project it found are no longer optional, so the code after the
    check needs no ``assert ... is not None`` (the fields are read-only, so narrowing
    their types in a subclass is sound)."""

    user: UserRecord
    member: MemberRecord
    project: ProjectRecord
