"""``python -m functions.cli``: the command-line client of the admin API
(docs/admin-api.md). Standard library and ``requests`` only, so it runs anywhere the
admin URL is reachable, without the functions' cloud dependencies.

Exit codes: 0 done, 1 the API (or the network) said no, 2 the command line is wrong.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal, InvalidOperation
from os import environ
from textwrap import indent
from typing import Any
from urllib.parse import quote

import requests

EPILOG = """examples:
  export TOLLGATE_ADMIN_URL=http://127.0.0.1:8082 TOLLGATE_ADMIN_TOKEN=tga_...
  %(prog)s user create carol --name Carol
  %(prog)s project create lab --external-key main --budget 5 --models gpt-4o-mini
  %(prog)s member add lab carol
  %(prog)s usage --project lab --group-by user"""


class Failure(Exception):
    """One line for stderr: an API error or an unreachable URL (never a traceback)."""


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> requests.Response:
        query = {k: v for k, v in params.items() if v is not None}
        try:  # a long read timeout: loading the whole price table takes a while
            r = self.session.request(method, self.url + path, json=body, params=query,
                                     timeout=(10, 300))
        except requests.RequestException as exc:
            raise Failure(f"cannot reach {self.url} ({type(exc).__name__})") from None
        if r.status_code >= 400:
            try:
                e = r.json()["error"]
                raise Failure(f"{e['message']} ({e.get('code') or r.status_code})")
            except (ValueError, KeyError, TypeError):
                raise Failure(f"HTTP {r.status_code} from {self.url}: {r.text[:200]}") from None
        return r

    def __call__(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        return self.call(method, path, body, **params).json()

    def pages(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a cursor-paged listing."""
        token = None
        while True:
            page = self("GET", path, page_token=token, **params)
            yield from page["data"]
            if not (token := page.get("next_page_token")):
                return


def seg(*parts: str) -> str:
    """A path from ids, each quoted (a model id may contain '/' or ':')."""
    return "".join("/" + quote(p, safe="") for p in parts)


def _is_num(v: Any) -> bool:
    if isinstance(v, bool) or v is None:
        return False
    try:
        Decimal(str(v))
        return True
    except InvalidOperation:
        return False


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Padded columns; numbers (ints, decimal strings) right-aligned, None as '-'."""
    cells = [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    for raw, r in zip(rows, cells, strict=True):
        lines.append("  ".join(c.rjust(w) if _is_num(v) else c.ljust(w)
                               for v, c, w in zip(raw, r, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


def fields(d: dict[str, Any], *names: str) -> str:
    return "\n".join(f"{n}: {'-' if d.get(n) is None else d.get(n)}" for n in names)


# --- commands: each returns the API's answer and the text shown without --json ---------

Out = tuple[Any, str]


def user_create(api: Api, a: argparse.Namespace) -> Out:
    u = api("POST", "/users", {"id": a.id, "name": a.name, "email": a.email})
    return u, f"created user {u['id']}"


def user_list(api: Api, a: argparse.Namespace) -> Out:
    us = api("GET", "/users")["data"]
    return us, table(["id", "name", "email", "disabled"],
                     [[u["id"], u.get("name"), u.get("email"), u.get("disabled")] for u in us])


def user_disable(api: Api, a: argparse.Namespace) -> Out:
    u = api("POST", seg("users", a.id, "disable"))
    return u, f"disabled user {u['id']}; their keys no longer work"


def key_add(api: Api, a: argparse.Namespace) -> Out:
    if a.secret_stdin:  # a terminal gets a hidden prompt; a pipe is read whole
        secret = getpass.getpass("secret: ") if sys.stdin.isatty() else sys.stdin.read()
    else:
        secret = a.secret
    k = api("POST", "/external-keys", {"id": a.id, "secret": secret.strip(),
                                       **({"base_url": a.base_url} if a.base_url else {})})
    return k, f"added external key {k['id']} (...{k['last4']}), validated upstream"


def key_list(api: Api, a: argparse.Namespace) -> Out:
    ks = api("GET", "/external-keys")["data"]
    return ks, table(["id", "last4", "base_url", "projects", "created_at", "rotated_at"],
                     [[k["id"], k["last4"], k.get("base_url"), ",".join(k["projects"]) or "-",
                       k.get("created_at"), k.get("rotated_at")] for k in ks])


def _history(m: dict[str, Any]) -> str:
    rows = [[p["valid_from"], p.get("valid_to"), r.get("input"), r.get("cached_input"),
             r.get("output"), r.get("cache_write"), p.get("source")]
            for p in m["prices"] for r in [p["tiers"]["default"]]]
    return f"model {m['id']} (USD per 1M tokens)\n" + table(
        ["valid_from", "valid_to", "input", "cached", "output", "cache_write", "source"], rows)


def model_add(api: Api, a: argparse.Namespace) -> Out:
    m = api("POST", "/models", {"id": a.id})
    return m, f"added model {m['id']} (no price yet: set one with 'model cost')"


def model_cost(api: Api, a: argparse.Namespace) -> Out:
    body = {"valid_from": a.valid_from, "input": a.input, "output": a.output,
            "cached_input": a.cached_input, "cache_write": a.cache_write}
    m = api("POST", seg("models", a.id, "costs"), {k: v for k, v in body.items() if v})
    return m, _history(m)


def model_show(api: Api, a: argparse.Namespace) -> Out:
    m = api("GET", seg("models", a.id))
    return m, _history(m)


def prices_load(api: Api, a: argparse.Namespace) -> Out:
    r = api("POST", "/models/load-prices", {"models": a.model} if a.model else {})
    text = f"source: {r['source']}\nloaded: {r['loaded']}\nunchanged: {r['unchanged']}"
    if r.get("conflicts"):
        text += "\nkept (a different price is stored):\n" + table(
            ["model", "valid_from", "reason"],
            [[c["model"], c["valid_from"], c["reason"]] for c in r["conflicts"]])
    if r["skipped"]:
        text += f"\nskipped: {len(r['skipped'])}\n" + table(
            ["model", "reason"], [[s["model"], s["reason"]] for s in r["skipped"]])
    return r, text


def project_create(api: Api, a: argparse.Namespace) -> Out:
    body = {"id": a.id, "external_key": a.external_key, "name": a.name, "budget_usd": a.budget,
            "budget_period": a.period, "default_max_output_tokens": a.default_max_output,
            "allowed_models": a.models.split(",") if a.models else None}
    p = api("POST", "/projects", {k: v for k, v in body.items() if v is not None})
    return p, f"created project {p['id']}\n" + fields(
        p, "budget_usd", "budget_period", "allowed_models", "external_key")


def project_list(api: Api, a: argparse.Namespace) -> Out:
    ps = api("GET", "/projects")["data"]
    return ps, table(["id", "name", "external_key", "budget $", "period", "models", "archived"],
                     [[p["id"], p.get("name"), p.get("external_key"), p.get("budget_usd"),
                       p.get("budget_period"), ",".join(p.get("allowed_models") or []) or "any",
                       p.get("archived", False)] for p in ps])


def project_show(api: Api, a: argparse.Namespace) -> Out:
    p = api("GET", seg("projects", a.id))
    spend = fields(p["spend"], "period", "budget_usd", "spent_usd", "held_usd",
                   "remaining_usd", "in_flight")
    return p, fields(p, "id", "name", "external_key", "budget_period", "allowed_models",
                     "default_max_output_tokens", "archived") + "\nspend:\n" + indent(
        spend, "  ")


def _key_text(who: str, k: dict[str, Any]) -> str:
    # The key alone after "key: " so it can be copied; it cannot be shown again.
    return (f"{who}\nkey: {k['key']}\n"
            "This key is shown only once: copy it now (rotate it if it is lost).")


def member_add(api: Api, a: argparse.Namespace) -> Out:
    body = {"user": a.user, "role": a.role, "budget_usd": a.budget, "key_name": a.key_name}
    r = api("POST", seg("projects", a.project, "members"),
            {k: v for k, v in body.items() if v is not None})
    return r, _key_text(f"added {a.user} to {a.project} as {r['member']['role']}", r)


def member_list(api: Api, a: argparse.Namespace) -> Out:
    ms = api("GET", seg("projects", a.project, "members"))
    return ms, f"period: {ms.get('period')}\n" + table(
        ["user", "role", "budget $", "spent $", "keys"],
        [[m["user"], m["role"], m.get("budget_usd"), m.get("spent_usd"),
          ",".join(f"{k['name']}(...{k['last4']})" for k in m["keys"]
                   if not k.get("revoked_at")) or "-"] for m in ms["data"]])


def member_budget(api: Api, a: argparse.Namespace) -> Out:
    usd = None if a.usd.lower() == "none" else a.usd
    m = api("PATCH", seg("projects", a.project, "members", a.user), {"budget_usd": usd})
    return m, f"{a.user} in {a.project}: budget {m.get('budget_usd') or 'none (project only)'}"


def member_remove(api: Api, a: argparse.Namespace) -> Out:
    r = api("DELETE", seg("projects", a.project, "members", a.user))
    return r, f"removed {a.user} from {a.project}; {r['keys_revoked']} key(s) revoked"


def member_rotate(api: Api, a: argparse.Namespace) -> Out:
    r = api("POST", seg("projects", a.project, "members", a.user, "keys", a.key_name, "rotate"))
    return r, _key_text(f"rotated key '{a.key_name}' of {a.user} in {a.project}; "
                        "the old key has stopped", r)


def _limit_path(a: argparse.Namespace) -> str:
    return seg("projects", a.project, "limits", a.model) + (seg("users", a.user)
                                                            if a.user else "")


def limit_set(api: Api, a: argparse.Namespace) -> Out:
    body = {"budget_usd": a.budget, "rpm": a.rpm, "tpm": a.tpm}
    lim = api("PUT", _limit_path(a), {k: v for k, v in body.items() if v is not None})
    return lim, fields(lim, "project", "model", "user", "budget_usd", "rpm", "tpm")


def limit_clear(api: Api, a: argparse.Namespace) -> Out:
    return api("DELETE", _limit_path(a)), f"cleared the {a.model} limit"


def limit_list(api: Api, a: argparse.Namespace) -> Out:
    ls = api("GET", seg("projects", a.project, "limits"))["data"]
    return ls, table(["model", "user", "budget $", "rpm", "tpm"],
                     [[x["model"], x.get("user") or "(all)", x.get("budget_usd"), x.get("rpm"),
                       x.get("tpm")] for x in ls])


def _filters(a: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(a, k) for k in ("user", "project", "model", "after", "before")}


def usage(api: Api, a: argparse.Namespace) -> Out:
    rows = list(api.pages("/usage", group_by=a.group_by, limit=200, **_filters(a)))
    return {"data": rows}, table(
        ["group", "calls", "input", "cached", "output", "cost $", "avg $/call"],
        [[r["group"] or "(all)", r["calls"], r["input_tokens"], r["cached_tokens"],
          r["output_tokens"], r["cost_usd"], r["avg_cost_usd"]] for r in rows])


def queries(api: Api, a: argparse.Namespace) -> Out:
    if a.csv:  # streamed page by page: an export may be large
        token, first = None, True
        while True:
            r = api.call("GET", "/queries", format="csv", limit=1000, page_token=token,
                         **_filters(a))
            text = r.text if first else r.text.split("\n", 1)[-1]  # one header only
            sys.stdout.write(text)
            first, token = False, r.headers.get("x-next-page-token")
            if not token:
                return None, ""
    rows = list(api.pages("/queries", limit=1000, **_filters(a)))
    return {"data": rows}, table(
        ["ts", "user", "project", "model", "status", "input", "cached", "output", "cost $"],
        [[r.get("ts"), r.get("user"), r.get("project"), r.get("model"), r.get("status"),
          r.get("input_tokens"), r.get("cached_tokens"), r.get("output_tokens"),
          r.get("cost_usd")] for r in rows])


def sweep(api: Api, a: argparse.Namespace) -> Out:
    r = api("POST", "/sweep")
    return r, f"swept {r['swept']} expired hold(s)"


def audit(api: Api, a: argparse.Namespace) -> Out:
    r = api("GET", "/audit", limit=a.limit)
    return r, table(["ts", "actor", "action", "target"],
                    [[x["ts"], x["actor"], x["action"], x["target"]] for x in r["data"]])


# --- the parser -----------------------------------------------------------------------

Handler = Callable[[Api, argparse.Namespace], Out]


def build_parser() -> argparse.ArgumentParser:
    # The global options are accepted before or after the command; SUPPRESS keeps a
    # subcommand's unset option from overwriting one given before it.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--url", help="admin function URL (env TOLLGATE_ADMIN_URL)")
    common.add_argument("--token", help="admin token or a lead's proxy key "
                                        "(env TOLLGATE_ADMIN_TOKEN)")
    common.add_argument("--json", action="store_true", help="print the API's JSON answer")
    fmt = argparse.RawDescriptionHelpFormatter
    top = argparse.ArgumentParser(prog="python -m functions.cli", parents=[common],
                                  formatter_class=fmt, epilog=EPILOG,
                                  description="Manage Tollgate through its admin API.")
    groups = top.add_subparsers(dest="group", required=True, metavar="COMMAND")

    def group(name: str, help: str) -> Any:
        p = groups.add_parser(name, help=help, description=help)
        return p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(sub: Any, name: str, fn: Handler, help: str, epilog: str | None = None) -> Any:
        p = sub.add_parser(name, help=help, description=help, epilog=epilog,
                           parents=[common], formatter_class=fmt)
        p.set_defaults(run=fn)
        return p

    g = group("user", "users (people holding keys)")
    p = cmd(g, "create", user_create, "create a user",
            "example: %(prog)s carol --name Carol --email carol@example.com")
    p.add_argument("id")
    p.add_argument("--name")
    p.add_argument("--email")
    cmd(g, "list", user_list, "list users")
    cmd(g, "disable", user_disable, "disable a user: all their keys stop at once").add_argument(
        "id")

    g = group("key", "external (OpenAI) keys")
    p = cmd(g, "add-external", key_add, "store an OpenAI key, validated by one embeddings call",
            "The secret is best piped in, so it stays out of shell history:\n"
            "  %(prog)s main --secret-stdin < openai-key.txt\n"
            "On a terminal --secret-stdin prompts without echo.")
    p.add_argument("id")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--secret-stdin", action="store_true", help="read the secret from stdin")
    src.add_argument("--secret", help="the secret itself (visible in shell history)")
    p.add_argument("--base-url", help="an OpenAI-compatible base URL (default: OpenAI's)")
    cmd(g, "list-external", key_list, "list external keys (last 4 characters only)")

    g = group("model", "models and their dated prices (USD per 1M tokens)")
    cmd(g, "add", model_add, "add a model without a price").add_argument("id")
    p = cmd(g, "cost", model_cost, "set a model's price from a date on (ends the previous one)",
            "example: %(prog)s gpt-x --from 2026-01-01T00:00:00Z --input 1 --output 4")
    p.add_argument("id")
    p.add_argument("--from", dest="valid_from", required=True,
                   help="ISO 8601 with a zone, e.g. 2026-01-01T00:00:00Z")
    for opt, req in (("--input", True), ("--output", True), ("--cached-input", False),
                     ("--cache-write", False)):
        p.add_argument(opt, required=req, metavar="USD", help="USD per 1M tokens")
    cmd(g, "show", model_show, "show a model's price history").add_argument("id")

    g = group("prices", "the shipped OpenAI price table")
    p = cmd(g, "load", prices_load, "load prices from genai-prices (idempotent)",
            "example: %(prog)s --model gpt-4o --model gpt-4o-mini")
    p.add_argument("--model", action="append", help="only this model (repeatable)")

    g = group("project", "projects: budget, allowed models, external key")
    p = cmd(g, "create", project_create, "create a project",
            "example: %(prog)s lab --external-key main --budget 5 --models gpt-4o-mini")
    p.add_argument("id")
    p.add_argument("--external-key", required=True, help="id of an external key")
    p.add_argument("--name")
    p.add_argument("--budget", metavar="USD")
    p.add_argument("--period", choices=("total", "monthly", "daily"))
    p.add_argument("--models", help="comma-separated allowed models (default: any priced)")
    p.add_argument("--default-max-output", type=int, metavar="N",
                   help="max output tokens when a request sets none")
    cmd(g, "list", project_list, "list projects")
    cmd(g, "show", project_show, "show a project with this period's spend").add_argument("id")

    g = group("member", "project members and their proxy keys (leads may use these)")
    p = cmd(g, "add", member_add, "add a user to a project; prints their key once",
            "example: %(prog)s lab carol --budget 2")
    p.add_argument("project")
    p.add_argument("user")
    p.add_argument("--role", choices=("member", "lead"))
    p.add_argument("--budget", metavar="USD", help="the member's own budget in the project")
    p.add_argument("--key-name", help="name of the first key (default: default)")
    cmd(g, "list", member_list, "list a project's members, spend and keys").add_argument(
        "project")
    p = cmd(g, "budget", member_budget, "set a member's budget ('none' removes it)",
            "example: %(prog)s lab carol 2.50")
    for name in ("project", "user", "usd"):
        p.add_argument(name)
    p = cmd(g, "remove", member_remove, "remove a member and revoke their keys")
    p.add_argument("project")
    p.add_argument("user")
    p = cmd(g, "rotate", member_rotate, "replace a member's key; the old one stops at once")
    p.add_argument("project")
    p.add_argument("user")
    p.add_argument("--key-name", default="default")

    g = group("limit", "per-model limits of a project or of one member")
    for name, fn, text in (("set", limit_set, "set a model limit (options left out are cleared)"),
                           ("clear", limit_clear, "remove a model limit")):
        p = cmd(g, name, fn, text, "example: %(prog)s lab gpt-4o --budget 1 --rpm 60")
        p.add_argument("project")
        p.add_argument("model")
        p.add_argument("--user", help="limit this member only")
        if name == "set":
            p.add_argument("--budget", metavar="USD")
            p.add_argument("--rpm", type=int, help="requests per minute")
            p.add_argument("--tpm", type=int, help="tokens per minute")
    cmd(g, "list", limit_list, "list a project's limits").add_argument("project")

    for name, fn, text in (("usage", usage, "aggregated usage: calls, tokens and cost"),
                           ("queries", queries, "the usage records, newest first")):
        p = cmd(groups, name, fn, text, "example: %(prog)s --project lab --after "
                "2026-11-01T00:00:00Z" + (" --group-by user" if name == "usage" else " --csv"))
        for f in ("user", "project", "model"):
            p.add_argument("--" + f)
        p.add_argument("--after", help="ISO 8601 with a zone (inclusive)")
        p.add_argument("--before", help="ISO 8601 with a zone (exclusive)")
        if name == "usage":
            p.add_argument("--group-by", choices=("user", "project", "model", "day"))
        else:
            p.add_argument("--csv", action="store_true", help="CSV to stdout (all columns)")
    cmd(groups, "sweep", sweep, "book expired budget holds now")
    cmd(groups, "audit", audit, "the audit trail, newest first").add_argument(
        "--limit", type=int, default=50)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    try:
        a = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help and usage errors: return the code, for callers
        return exc.code if isinstance(exc.code, int) else 2
    url = getattr(a, "url", None) or environ.get("TOLLGATE_ADMIN_URL")
    token = getattr(a, "token", None) or environ.get("TOLLGATE_ADMIN_TOKEN")
    for value, flag, env in ((url, "--url", "TOLLGATE_ADMIN_URL"),
                             (token, "--token", "TOLLGATE_ADMIN_TOKEN")):
        if not value:
            print(f"error: pass {flag} or set {env}", file=sys.stderr)
            return 2
    try:
        data, text = a.run(Api(str(url), str(token)), a)
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if data is not None:
        print(json.dumps(data, indent=2) if getattr(a, "json", False) else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
