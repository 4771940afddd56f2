"""Commands that change what exists: project settings and archive, user details, a
member's named keys and their limits, external key rotation and removal, the model
list, and top-ups. Registered in ``commands.COMMANDS`` on import, like the others."""

from __future__ import annotations

from typing import Any

from tollgate_cli.api import Api, fields, given, seg, table
from tollgate_cli.commands import SECRET_ARGS, USD, A, Out, command, read_secret


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [x for x in value.split(",") if x]


def _flag(value: str | None) -> bool | None:
    return None if value is None else value == "on"


ON_OFF = {"choices": ("on", "off")}


@command(
    "project update",
    "change a project's settings (options left out stay)",
    "id",
    "--name",
    ("--external-key", {"help": "id of an external key"}),
    ("--budget", {**USD, "help": "the budget per period ('none': unlimited)"}),
    ("--period", {"choices": ("total", "monthly", "weekly", "daily")}),
    ("--models", {"help": "comma-separated allowed models"}),
    ("--default-max-output", {"type": int, "metavar": "N"}),
    ("--rpm", {"type": int, "help": "requests per minute for the project"}),
    ("--tpm", {"type": int, "help": "tokens per minute for the project"}),
    ("--cache", {**ON_OFF, "help": "the opt-in response cache"}),
    ("--cache-ttl", {"type": int, "metavar": "S", "help": "cache entry lifetime"}),
    ("--soft", {**ON_OFF, "help": "a soft budget alerts and marks, never refuses"}),
    ("--clamp-output", {**ON_OFF, "help": "lower max tokens to fit the budget left"}),
    ("--cors-origins", {"help": "comma-separated browser origins ('' for none)"}),
    epilog="lab --budget 50 --period monthly --rpm 120 --cache on",
)
def project_update(api: Api, a: A) -> Out:
    body: dict[str, Any] = given(
        name=a.name,
        external_key=a.external_key,
        budget_period=a.period,
        allowed_models=_csv(a.models),
        default_max_output_tokens=a.default_max_output,
        rpm=a.rpm,
        tpm=a.tpm,
        budget_soft=_flag(a.soft),
        clamp_output=_flag(a.clamp_output),
        cors_origins=_csv(a.cors_origins),
    )
    if a.budget is not None:
        body["budget_usd"] = None if a.budget.lower() == "none" else a.budget
    if a.cache is not None or a.cache_ttl is not None:
        body["cache"] = given(enabled=a.cache == "on" if a.cache else None, ttl_s=a.cache_ttl)
    p = api("PATCH", seg("projects", a.id), body)
    return p, f"updated project {p['id']}\n" + fields(
        p,
        "budget_usd",
        "budget_period",
        "budget_soft",
        "allowed_models",
        "rpm",
        "tpm",
        "clamp_output",
        "cors_origins",
    )


@command("project archive", "archive a project: all its keys stop at once", "id", epilog="lab")
def project_archive(api: Api, a: A) -> Out:
    p = api("POST", seg("projects", a.id, "archive"))
    return p, f"archived project {p['id']}; its keys no longer work"


@command(
    "user update",
    "change a user's name or email",
    "id",
    "--name",
    "--email",
    epilog="carol --email carol@example.org",
)
def user_update(api: Api, a: A) -> Out:
    u = api("PATCH", seg("users", a.id), given(name=a.name, email=a.email))
    return u, f"updated user {u['id']}\n" + fields(u, "name", "email", "disabled")


KEY_LIMITS = (
    ("--budget", {**USD, "help": "the key's own budget ('none' removes it)"}),
    ("--rpm", {"type": int, "help": "the key's requests per minute"}),
    ("--models", {"help": "comma-separated models this key may call"}),
)


def _key_limits(a: A) -> dict[str, Any]:
    body = given(rpm=a.rpm, allowed_models=_csv(a.models))
    if a.budget is not None:
        body["budget_usd"] = None if a.budget.lower() == "none" else a.budget
    return body


@command(
    "key add",
    "give a member another named key; prints it once",
    "project",
    "user",
    "name",
    ("--expires", {"metavar": "ISO", "help": "when the key stops"}),
    *KEY_LIMITS,
    epilog="lab carol ci --budget 5 --rpm 30 --models gpt-4o-mini",
)
def key_add_named(api: Api, a: A) -> Out:
    k = api(
        "POST",
        seg("projects", a.project, "members", a.user, "keys"),
        given(name=a.name, expires_at=a.expires, **_key_limits(a)),
    )
    return k, (
        f"added key '{a.name}' for {a.user} in {a.project}\nkey: {k['key']}\n"
        "This key is shown only once: copy it now."
    )


@command(
    "key list",
    "a member's keys: last 4 characters, limits, last use",
    "project",
    "user",
    epilog="lab carol",
)
def key_list_named(api: Api, a: A) -> Out:
    ks = api("GET", seg("projects", a.project, "members", a.user, "keys"))["data"]
    return ks, table(
        [
            "name",
            "last4",
            "budget $",
            "spent $",
            "rpm",
            "models",
            "last used",
            "expires",
            "revoked",
        ],
        [
            [
                k["name"],
                "..." + str(k["last4"]),
                k.get("budget_usd"),
                k.get("spent_usd"),
                k.get("rpm"),
                k.get("allowed_models") or "all",
                k.get("last_used_at"),
                k.get("expires_at"),
                k.get("revoked_at"),
            ]
            for k in ks
        ],
    )


@command(
    "key limits",
    "set a named key's own limits",
    "project",
    "user",
    "name",
    *KEY_LIMITS,
    epilog="lab carol ci --budget none --rpm 60",
)
def key_limits(api: Api, a: A) -> Out:
    k = api("PATCH", seg("projects", a.project, "members", a.user, "keys", a.name), _key_limits(a))
    return k, f"key '{a.name}' of {a.user}\n" + fields(k, "budget_usd", "rpm", "allowed_models")


@command(
    "key revoke",
    "revoke a member's named key: it stops at once",
    "project",
    "user",
    "name",
    epilog="lab carol ci",
)
def key_revoke(api: Api, a: A) -> Out:
    r = api("DELETE", seg("projects", a.project, "members", a.user, "keys", a.name))
    return r, f"revoked key '{a.name}' of {a.user} in {a.project}"


@command(
    "key rotate-external",
    "replace an OpenAI key's secret, validated first",
    "id",
    *SECRET_ARGS,
    epilog="main --secret-stdin < new-openai-key.txt",
)
def key_rotate_external(api: Api, a: A) -> Out:
    k = api("POST", seg("external-keys", a.id, "rotate"), {"secret": read_secret(a).strip()})
    return k, f"rotated external key {k['id']} (now ...{k['last4']})"


@command("key delete-external", "delete an OpenAI key no project uses", "id", epilog="old")
def key_delete_external(api: Api, a: A) -> Out:
    r = api("DELETE", seg("external-keys", a.id))
    return r, f"deleted external key {a.id}"


@command("model list", "the models and their current price (USD per 1M tokens)", epilog="--json")
def model_list(api: Api, a: A) -> Out:
    ms = api("GET", "/models")["data"]
    rows = []
    for m in ms:
        rates = ((m.get("price") or {}).get("tiers") or {}).get("default") or {}
        rows.append(
            [
                m["id"],
                rates.get("input"),
                rates.get("cached_input"),
                rates.get("output"),
                (m.get("price") or {}).get("valid_from"),
            ]
        )
    return ms, table(["model", "input", "cached", "output", "since"], rows)


@command(
    "topup add",
    "add $ to a project's or a member's budget until a date",
    "project",
    ("usd", USD),
    ("--until", {"required": True, "metavar": "ISO"}),
    ("--user", {"help": "this member (default: the project)"}),
    "--note",
    epilog="lab 10 --user carol --until 2026-12-20T00:00:00Z --note 'launch week'",
)
def topup_add(api: Api, a: A) -> Out:
    t = api(
        "POST",
        seg("projects", a.project, "topups"),
        given(user=a.user, amount_usd=a.usd, until=a.until, note=a.note),
    )
    return t, f"topped up {a.user or a.project} by ${t['amount_usd']} until {t['until']}"


@command("topup list", "a project's top-ups, newest first", "project", epilog="lab")
def topup_list(api: Api, a: A) -> Out:
    ts = api("GET", seg("projects", a.project, "topups"))["data"]
    return ts, table(
        ["user", "amount $", "until", "active", "note", "by"],
        [
            [
                t.get("user") or "(project)",
                t.get("amount_usd"),
                t.get("until"),
                t.get("active"),
                t.get("note"),
                t.get("by"),
            ]
            for t in ts
        ],
    )
