"""Every Firestore document id Tollgate builds from names, in one place. Pure.

Ids are the names they come from, percent-encoded and joined with ``|``: model names
may hold ``/`` (not allowed in an id) and any name may hold ``|``, so each part is
quoted. A budget counter is ``<scope>|<names…>|<period>`` (``p|demo|2026-12``), a
rate-limit window ``rl|<names…>|<minute>``. docs/data-model.md lists the collections.
"""

from __future__ import annotations

from urllib.parse import quote


def _part(p: str) -> str:
    q = quote(p, safe="")
    # Firestore reserves the ids "." and ".." and anything like "__x__"; a leading
    # "." or "_" is escaped so no part (and so no id) can take those forms.
    if q[:1] in (".", "_"):
        q = f"%{ord(q[0]):02X}" + q[1:]
    return q


def doc_id(*parts: str) -> str:
    """A Firestore document id built from free-form parts. Callers bound the parts'
    length (ids are at most 1500 bytes)."""
    return "|".join(_part(p) for p in parts)


# --- configuration -------------------------------------------------------------------


def model(name: str) -> str:
    """``models``: a model's prices."""
    return doc_id(name)


def member(project: str, user: str) -> str:
    """``members``: a user's membership of a project."""
    return doc_id(project, user)


def limit(project: str, model_name: str, user: str | None = None) -> str:
    """``limits``: a model's limits in a project, or a member's on that model."""
    return doc_id(project, user, model_name) if user else doc_id(project, model_name)


def reconciliation(day: str, external_key: str) -> str:
    """``reconciliations``: one UTC day of one external key."""
    return doc_id(day, external_key)


# --- budget counters (``counters``) and rate windows (``windows``) --------------------


def project_counter(project: str, period: str) -> str:
    return doc_id("p", project, period)


def member_counter(project: str, user: str, period: str) -> str:
    return doc_id("m", project, user, period)


def model_counter(project: str, model_name: str, period: str) -> str:
    return doc_id("pm", project, model_name, period)


def member_model_counter(project: str, user: str, model_name: str, period: str) -> str:
    return doc_id("pum", project, user, model_name, period)


def key_counter(project: str, user: str, key_name: str, period: str) -> str:
    return doc_id("k", project, user, key_name, period)


def project_window(project: str, minute: str) -> str:
    return doc_id("rl", project, minute)


def model_window(project: str, model_name: str, minute: str) -> str:
    return doc_id("rl", project, model_name, minute)


def member_model_window(project: str, user: str, model_name: str, minute: str) -> str:
    return doc_id("rl", project, user, model_name, minute)


def key_window(project: str, user: str, key_name: str, minute: str) -> str:
    return doc_id("rlk", project, user, key_name, minute)
