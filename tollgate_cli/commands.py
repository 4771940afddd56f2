"""The CLI's commands, one function each, registered by name ("member add") with the
arguments its parser takes. Each returns the API's answer and the text to show."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from dataclasses import dataclass
from textwrap import indent
from typing import Any

from tollgate_cli.api import Api, Failure, fields, given, seg, table

# --- commands: each returns the API's answer and the text shown without --json ----------

A = argparse.Namespace
Out = tuple[Any, str]
Handler = Callable[[Api, A], Out]
# A name, or a name and add_argument's options; "exclusive": one of a required group.
Arg = str | tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Command:
    run: Handler
    help: str
    args: tuple[Arg, ...]
    epilog: str | None


COMMANDS: dict[str, Command] = {}
USD = {"metavar": "USD"}
PRICE = {"metavar": "USD", "help": "USD per 1M tokens"}
FILTERS: tuple[Arg, ...] = (
    "--user",
    "--project",
    "--model",
    ("--tag", {"help": "calls sent with this x-tollgate-tag"}),
    ("--key", {"help": "calls made with keys of this name"}),
    ("--after", {"help": "ISO 8601 with a zone, inclusive"}),
    ("--before", {"help": "ISO 8601 with a zone, exclusive"}),
)


def command(
    name: str, help: str, *args: Arg, epilog: str | None = None
) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = Command(fn, help, args, epilog and "example:\n  %(prog)s " + epilog)
        return fn

    return register


@command(
    "user create",
    "create a user",
    "id",
    "--name",
    "--email",
    epilog="carol --name Carol --email carol@example.com",
)
def user_create(api: Api, a: A) -> Out:
    u = api("POST", "/users", given(id=a.id, name=a.name, email=a.email))
    return u, f"created user {u['id']}"


@command("user list", "list users")
def user_list(api: Api, a: A) -> Out:
    us = api("GET", "/users")["data"]
    return us, table(
        ["id", "name", "email", "disabled"],
        [[u["id"], u.get("name"), u.get("email"), u.get("disabled")] for u in us],
    )


@command("user disable", "disable a user: all their keys stop at once", "id")
def user_disable(api: Api, a: A) -> Out:
    u = api("POST", seg("users", a.id, "disable"))
    return u, f"disabled user {u['id']}; their keys no longer work"


# a secret is given on stdin (preferred: no shell history) or, exclusively, inline
SECRET_ARGS = (
    (
        "--secret-stdin",
        {
            "action": "store_true",
            "exclusive": True,
            "help": "read the secret from stdin (preferred)",
        },
    ),
    ("--secret", {"exclusive": True, "help": "the secret itself (stays in shell history)"}),
)


def read_secret(a: A) -> str:
    """``--secret-stdin``: a terminal gets a prompt without echo, a pipe is read whole."""
    if a.secret_stdin:
        return getpass.getpass("secret: ") if sys.stdin.isatty() else sys.stdin.read()
    return a.secret  # (argparse: --secret or --secret-stdin is required)


@command(
    "key add-external",
    "store an OpenAI key, validated by one embeddings call",
    "id",
    *SECRET_ARGS,
    ("--base-url", {"help": "an OpenAI-compatible base URL (default: OpenAI's)"}),
    ("--openai-project", {"help": "its OpenAI project id, proj_... (reconciliation)"}),
    ("--openai-key-id", {"help": "its OpenAI API key id, key_... (reconciliation)"}),
    epilog="main --secret-stdin < openai-key.txt",
)
def key_add(api: Api, a: A) -> Out:
    k = api(
        "POST",
        "/external-keys",
        given(
            id=a.id,
            secret=read_secret(a).strip(),
            base_url=a.base_url,
            openai_project_id=a.openai_project,
            openai_key_id=a.openai_key_id,
        ),
    )
    return k, f"added external key {k['id']} (...{k['last4']}), validated upstream"


@command("key list-external", "list external keys (last 4 characters only)")
def key_list(api: Api, a: A) -> Out:
    ks = api("GET", "/external-keys")["data"]
    return ks, table(
        ["id", "last4", "base_url", "projects", "created_at", "rotated_at"],
        [
            [
                k["id"],
                "..." + k["last4"],
                k.get("base_url"),
                k["projects"],
                k.get("created_at"),
                k.get("rotated_at"),
            ]
            for k in ks
        ],
    )


def _history(m: dict[str, Any]) -> str:
    rows = [
        [
            p["valid_from"],
            p.get("valid_to"),
            r.get("input"),
            r.get("cached_input"),
            r.get("output"),
            r.get("cache_write"),
            p.get("source"),
        ]
        for p in m["prices"]
        for r in [p["tiers"]["default"]]
    ]
    return f"model {m['id']} (USD per 1M tokens)\n" + table(
        ["valid_from", "valid_to", "input", "cached", "output", "cache_write", "source"], rows
    )


@command("model add", "add a model without a price", "id")
def model_add(api: Api, a: A) -> Out:
    m = api("POST", "/models", {"id": a.id})
    return m, f"added model {m['id']} (no price yet: set one with 'model cost')"


@command(
    "model cost",
    "price a model from a date on (the previous price ends then)",
    "id",
    (
        "--from",
        {
            "dest": "valid_from",
            "required": True,
            "metavar": "ISO",
            "help": "ISO 8601 with a zone, e.g. 2026-01-01T00:00:00Z",
        },
    ),
    ("--input", {"required": True, **PRICE}),
    ("--output", {"required": True, **PRICE}),
    ("--cached-input", PRICE),
    ("--cache-write", PRICE),
    epilog="gpt-x --from 2026-01-01T00:00:00Z --input 1 --cached-input 0.1 --output 4",
)
def model_cost(api: Api, a: A) -> Out:
    m = api(
        "POST",
        seg("models", a.id, "costs"),
        given(
            valid_from=a.valid_from,
            input=a.input,
            output=a.output,
            cached_input=a.cached_input,
            cache_write=a.cache_write,
        ),
    )
    return m, _history(m)


@command("model show", "show a model's price history", "id")
def model_show(api: Api, a: A) -> Out:
    m = api("GET", seg("models", a.id))
    return m, _history(m)


@command(
    "prices load",
    "load prices from genai-prices (idempotent)",
    ("--model", {"action": "append", "help": "only this model (repeatable)"}),
    epilog="--model gpt-4o --model gpt-4o-mini",
)
def prices_load(api: Api, a: A) -> Out:
    r = api("POST", "/models/load-prices", given(models=a.model))
    text = f"source: {r['source']}\nloaded: {r['loaded']}\nunchanged: {r['unchanged']}"
    if r.get("conflicts"):
        text += f"\nkept, a different price is stored: {len(r['conflicts'])}\n" + table(
            ["model", "valid_from"], [[c["model"], c["valid_from"]] for c in r["conflicts"]]
        )
    if r["skipped"]:
        text += f"\nskipped: {len(r['skipped'])}\n" + table(
            ["model", "reason"], [[s["model"], s["reason"]] for s in r["skipped"]]
        )
    return r, text


@command(
    "project create",
    "create a project",
    "id",
    ("--external-key", {"required": True, "help": "id of an external key"}),
    "--name",
    ("--budget", {**USD, "help": "the project's budget per period"}),
    ("--period", {"choices": ("total", "monthly", "weekly", "daily")}),
    ("--models", {"help": "comma-separated allowed models (default: any priced)"}),
    (
        "--default-max-output",
        {"type": int, "metavar": "N", "help": "max output tokens when a request sets none"},
    ),
    epilog="lab --external-key main --budget 5 --models gpt-4o-mini",
)
def project_create(api: Api, a: A) -> Out:
    p = api(
        "POST",
        "/projects",
        given(
            id=a.id,
            external_key=a.external_key,
            name=a.name,
            budget_usd=a.budget,
            budget_period=a.period,
            default_max_output_tokens=a.default_max_output,
            allowed_models=a.models.split(",") if a.models else None,
        ),
    )
    return p, f"created project {p['id']}\n" + fields(
        p, "budget_usd", "budget_period", "allowed_models", "external_key"
    )


@command("project list", "list projects")
def project_list(api: Api, a: A) -> Out:
    ps = api("GET", "/projects")["data"]
    return ps, table(
        ["id", "name", "external_key", "budget $", "period", "models", "archived"],
        [
            [
                p["id"],
                p.get("name"),
                p.get("external_key"),
                p.get("budget_usd"),
                p.get("budget_period"),
                p.get("allowed_models") or "any",
                p.get("archived", False),
            ]
            for p in ps
        ],
    )


@command("project show", "show a project with this period's spend", "id")
def project_show(api: Api, a: A) -> Out:
    p = api("GET", seg("projects", a.id))
    spend = fields(
        p["spend"], "period", "budget_usd", "spent_usd", "held_usd", "remaining_usd", "in_flight"
    )
    return p, fields(
        p,
        "id",
        "name",
        "external_key",
        "budget_period",
        "allowed_models",
        "default_max_output_tokens",
        "archived",
    ) + "\nspend:\n" + indent(spend, "  ")


def _key_text(what: str, k: dict[str, Any]) -> str:
    # The key alone after "key: ", easy to copy: the API cannot show it again.
    return f"{what}\nkey: {k['key']}\nThis key is shown only once: copy it now."


@command(
    "member add",
    "add a user to a project; prints their proxy key once",
    "project",
    "user",
    ("--role", {"choices": ("member", "lead")}),
    ("--budget", {**USD, "help": "the member's own budget within the project"}),
    ("--key-name", {"help": "name of the first key (default: default)"}),
    epilog="lab carol --budget 2",
)
def member_add(api: Api, a: A) -> Out:
    r = api(
        "POST",
        seg("projects", a.project, "members"),
        given(user=a.user, role=a.role, budget_usd=a.budget, key_name=a.key_name),
    )
    return r, _key_text(f"added {a.user} to {a.project} as {r['member']['role']}", r)


@command("member list", "list a project's members, their spend and live keys", "project")
def member_list(api: Api, a: A) -> Out:
    ms = api("GET", seg("projects", a.project, "members"))
    return ms, f"period: {ms.get('period')}\n" + table(
        ["user", "role", "budget $", "spent $", "keys"],
        [
            [
                m["user"],
                m["role"],
                m.get("budget_usd"),
                m.get("spent_usd"),
                [f"{k['name']}(...{k['last4']})" for k in m["keys"] if not k.get("revoked_at")],
            ]
            for m in ms["data"]
        ],
    )


@command(
    "member budget",
    "set a member's budget ('none' removes it)",
    "project",
    "user",
    ("usd", USD),
    epilog="lab carol 2.50",
)
def member_budget(api: Api, a: A) -> Out:
    usd = None if a.usd.lower() == "none" else a.usd
    m = api("PATCH", seg("projects", a.project, "members", a.user), {"budget_usd": usd})
    return m, f"{a.user} in {a.project}: budget {m.get('budget_usd') or 'none'}"


@command("member remove", "remove a member and revoke their keys", "project", "user")
def member_remove(api: Api, a: A) -> Out:
    r = api("DELETE", seg("projects", a.project, "members", a.user))
    return r, f"removed {a.user} from {a.project}; {r['keys_revoked']} key(s) revoked"


@command(
    "member rotate",
    "replace a member's key; the old one stops at once",
    "project",
    "user",
    ("--key-name", {"default": "default"}),
)
def member_rotate(api: Api, a: A) -> Out:
    r = api("POST", seg("projects", a.project, "members", a.user, "keys", a.key_name, "rotate"))
    return r, _key_text(
        f"rotated key '{a.key_name}' of {a.user} in {a.project}; the old key has stopped", r
    )


LIMIT_ARGS: tuple[Arg, ...] = ("project", "model", ("--user", {"help": "this member only"}))


def _limit_path(a: A) -> str:
    return seg("projects", a.project, "limits", a.model) + (seg("users", a.user) if a.user else "")


@command(
    "limit set",
    "set a model limit (options left out are cleared)",
    *LIMIT_ARGS,
    ("--budget", USD),
    ("--rpm", {"type": int, "help": "requests per minute"}),
    ("--tpm", {"type": int, "help": "tokens per minute"}),
    epilog="lab gpt-4o --budget 1 --rpm 60",
)
def limit_set(api: Api, a: A) -> Out:
    lim = api("PUT", _limit_path(a), given(budget_usd=a.budget, rpm=a.rpm, tpm=a.tpm))
    return lim, fields(lim, "project", "model", "user", "budget_usd", "rpm", "tpm")


@command("limit clear", "remove a model limit", *LIMIT_ARGS)
def limit_clear(api: Api, a: A) -> Out:
    return api("DELETE", _limit_path(a)), f"cleared the {a.model} limit"


@command("limit list", "list a project's limits", "project")
def limit_list(api: Api, a: A) -> Out:
    ls = api("GET", seg("projects", a.project, "limits"))["data"]
    return ls, table(
        ["model", "user", "budget $", "rpm", "tpm"],
        [
            [x["model"], x.get("user") or "(all)", x.get("budget_usd"), x.get("rpm"), x.get("tpm")]
            for x in ls
        ],
    )


def _filters(a: A) -> dict[str, Any]:
    return {k: getattr(a, k) for k in ("user", "project", "model", "tag", "key", "after", "before")}


@command(
    "usage",
    "aggregated usage: calls, tokens and cost (every page)",
    *FILTERS,
    ("--group-by", {"choices": ("user", "project", "model", "day", "tag", "key")}),
    epilog="--project lab --after 2026-11-01T00:00:00Z --group-by tag",
)
def usage(api: Api, a: A) -> Out:
    rows = list(api.pages("/usage", group_by=a.group_by, limit=200, **_filters(a)))
    # without --group-by the one row is the total; by tag, null is the untagged calls
    nameless = "(no tag)" if a.group_by == "tag" else "(all)"
    return {"data": rows}, table(
        ["group", "calls", "input", "cached", "output", "cost $", "avg $/call"],
        [
            [
                nameless if r["group"] is None else r["group"],
                r["calls"],
                r["input_tokens"],
                r["cached_tokens"],
                r["output_tokens"],
                r["cost_usd"],
                r["avg_cost_usd"],
            ]
            for r in rows
        ],
    )


@command(
    "queries",
    "the usage records, newest first (every page)",
    *FILTERS,
    ("--csv", {"action": "store_true", "help": "CSV with every column, to stdout"}),
    epilog="--project lab --csv > lab.csv",
)
def queries(api: Api, a: A) -> Out:
    if a.csv:  # written page by page: an export may be large
        token, first = None, True
        while True:
            r = api.call(
                "GET", "/queries", format="csv", limit=1000, page_token=token, **_filters(a)
            )
            sys.stdout.write(r.text if first else r.text.split("\n", 1)[-1])  # one header
            first, token = False, r.headers.get("x-next-page-token")
            if not token:
                return None, ""
    rows = list(api.pages("/queries", limit=1000, **_filters(a)))
    return {"data": rows}, table(
        [
            "ts",
            "user",
            "project",
            "key",
            "model",
            "tag",
            "status",
            "input",
            "cached",
            "output",
            "cost $",
        ],
        [
            [
                r.get("ts"),
                r.get("user"),
                r.get("project"),
                r.get("key_name"),
                r.get("model"),
                r.get("tag"),
                r.get("status"),
                r.get("input_tokens"),
                r.get("cached_tokens"),
                r.get("output_tokens"),
                r.get("cost_usd"),
            ]
            for r in rows
        ],
    )


@command(
    "project alerts",
    "show or set a project's budget alerts and list those sent",
    "project",
    ("--webhook", {"help": "URL that gets a POST per threshold crossed ('' removes it)"}),
    ("--thresholds", {"help": "percentages of any budget, e.g. 50,80,100"}),
    (
        "--format",
        {
            "choices": ["json", "slack", "google_chat"],
            "help": "body shape; default: slack or google_chat for their "
            "webhook hosts, json otherwise",
        },
    ),
    epilog="lab --webhook https://hooks.slack.com/services/T0/B0/XXX --thresholds 80,100",
)
def project_alerts(api: Api, a: A) -> Out:
    if a.webhook is not None or a.thresholds is not None or a.format is not None:
        try:
            thresholds = (
                [int(t) for t in a.thresholds.split(",")] if a.thresholds is not None else None
            )
        except ValueError:
            raise Failure("--thresholds must be whole percentages, e.g. 50,80,100") from None
        api(
            "PUT",
            seg("projects", a.project, "alerts"),
            _alerts_body(api("GET", seg("projects", a.project, "alerts"))["config"], a, thresholds),
        )
    r = api("GET", seg("projects", a.project, "alerts"))
    c = r["config"]
    head = (
        f"webhook: {c.get('webhook_url') or '(none: alerts are only recorded)'}\n"
        f"format: {c.get('format', 'json')}\n"
        f"thresholds: {', '.join(f'{t} %' for t in c['thresholds'])}"
    )
    if not r["sent"]:
        return r, head + "\nno alert sent yet"
    return r, head + "\n" + table(
        ["ts", "limit", "threshold %", "spent $", "budget $", "period", "delivered"],
        [
            [
                x["ts"],
                x["limit"],
                x["threshold_percent"],
                x["spent_usd"],
                x["budget_usd"],
                x["period"],
                x.get("delivered"),
            ]
            for x in r["sent"]
        ],
    )


def _alerts_body(current: dict[str, Any], a: A, thresholds: list[int] | None) -> dict[str, Any]:
    """The PUT body: what was given, the rest as it is (a PUT replaces the config). A new
    webhook without --format lets the server pick the format its host takes; an empty
    --webhook removes it."""
    webhook = current.get("webhook_url") if a.webhook is None else a.webhook or None
    body = {"webhook_url": webhook, "thresholds": thresholds or current.get("thresholds")}
    if a.format is not None or a.webhook is None:
        body["format"] = a.format or current.get("format")
    return given(**body)


@command("project flush-cache", "empty a project's response cache", "project")
def project_flush_cache(api: Api, a: A) -> Out:
    r = api("POST", seg("projects", a.project, "cache", "flush"))
    return r, f"flushed {r['flushed']} cached answer(s) of {a.project}"


@command("ratelimits", "the last upstream x-ratelimit-* headers seen per external key")
def ratelimits(api: Api, a: A) -> Out:
    r = api("GET", "/ratelimits")
    rows = [
        [x["external_key"], x.get("seen_at"), name.removeprefix("x-ratelimit-"), value]
        for x in r["data"]
        for name, value in sorted(x.get("headers", {}).items())
    ]
    return r, table(["external key", "seen at", "header (x-ratelimit-)", "value"], rows)


@command("sweep", "book expired budget holds now")
def sweep(api: Api, a: A) -> Out:
    r = api("POST", "/sweep")
    return r, f"swept {r['swept']} expired hold(s)"


@command("audit", "the audit trail, newest first", ("--limit", {"type": int, "default": 50}))
def audit(api: Api, a: A) -> Out:
    r = api("GET", "/audit", limit=a.limit)
    return r, table(
        ["ts", "actor", "action", "target"],
        [[x["ts"], x["actor"], x["action"], x["target"]] for x in r["data"]],
    )
