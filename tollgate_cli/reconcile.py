"""Commands of the reconciliation with OpenAI's Usage and Costs APIs: the OpenAI admin
key, an external key's OpenAI ids, running a reconciliation and listing them.
Registered in ``commands.COMMANDS`` on import, like the others."""

from __future__ import annotations

from typing import Any

from tollgate_cli.api import Api, fields, given, seg, table
from tollgate_cli.commands import SECRET_ARGS, A, Out, command, read_secret


@command(
    "openai-admin-key set",
    "store OpenAI's organisation admin key (reads usage, "
    "never proxies), validated by one Usage API call",
    *SECRET_ARGS,
    epilog="--secret-stdin < openai-admin-key.txt",
)
def admin_key_set(api: Api, a: A) -> Out:
    k = api("PUT", "/openai-admin-key", {"secret": read_secret(a).strip()})
    return k, f"stored the OpenAI admin key (...{k['last4']}), validated on the Usage API"


@command("openai-admin-key show", "show whether an OpenAI admin key is set (last 4 only)")
def admin_key_show(api: Api, a: A) -> Out:
    k = api("GET", "/openai-admin-key")
    if not k["set"]:
        return k, "no OpenAI admin key is set: reconciliation cannot run"
    return k, f"OpenAI admin key ...{k['last4']}, set {k.get('set_at')} by {k.get('set_by')}"


@command("openai-admin-key delete", "forget the OpenAI admin key", epilog="")
def admin_key_delete(api: Api, a: A) -> Out:
    return api("DELETE", "/openai-admin-key"), "the OpenAI admin key is no longer used"


@command(
    "key openai-ids",
    "record where OpenAI counts an external key's usage",
    "id",
    ("--project", {"help": "its OpenAI project id, proj_... ('none' clears)"}),
    ("--key-id", {"help": "its OpenAI API key id, key_... ('none' clears)"}),
    epilog="main --project proj_abc123 --key-id key_abc123",
)
def key_openai_ids(api: Api, a: A) -> Out:
    body = {
        k: None if v.lower() == "none" else v
        for k, v in given(openai_project_id=a.project, openai_key_id=a.key_id).items()
    }
    k = api("PATCH", seg("external-keys", a.id), body)
    return k, f"external key {k['id']}\n" + fields(k, "openai_project_id", "openai_key_id")


def _pair(m: dict[str, Any], f: str) -> str:
    return f"{m['openai'][f]}/{m['tollgate'][f]}"


def show(docs: list[dict[str, Any]]) -> str:
    """Per reconciled day and key: a status line, tokens per model (OpenAI/Tollgate),
    and cost per model for the key's OpenAI project."""
    if not docs:
        return "nothing reconciled (no day to do, or no external key has an OpenAI project)"
    parts = []
    for d in sorted(docs, key=lambda d: (d["day"], d["external_key"])):
        over = d.get("over_threshold") or []
        state = (
            f"DRIFT over {d.get('threshold_percent')} %: {', '.join(over)}"
            if over
            else f"within {d.get('threshold_percent')} %"
        )
        head = (
            f"{d['day']}  external key {d['external_key']} (OpenAI {d['openai_project_id']}"
            f"{' / ' + d['openai_key_id'] if d.get('openai_key_id') else ''}): run "
            f"{d.get('runs')}, {'stable' if d.get('stable') else 'not stable yet'}; "
            f"{state}"
        )
        models = table(
            [
                "model",
                "requests",
                "input",
                "cached",
                "output",
                "unbooked",
                "estimated",
                "max drift %",
            ],
            [
                [
                    m["model"],
                    _pair(m, "requests"),
                    _pair(m, "input_tokens"),
                    _pair(m, "cached_tokens"),
                    _pair(m, "output_tokens"),
                    m["unbooked_requests"],
                    m["tollgate"]["estimated_calls"],
                    _worst(m["drift_percent"].values()),
                ]
                for m in d["models"]
            ],
        )
        cost = d["cost"]
        others = cost.get("shared_with") or []
        shared = (
            f"shared with external key(s) {', '.join(others)}"
            if others
            else "no other external key"
        )
        costs = table(
            ["model", "OpenAI $", "Tollgate $", "drift $", "drift %"],
            [
                [c["model"], c["openai_usd"], c["tollgate_usd"], c["drift_usd"], c["drift_percent"]]
                for c in cost["models"]
            ],
        )
        parts.append(
            f"{head}\ntokens (OpenAI/Tollgate):\n{models}\n"
            f"cost of OpenAI project {d['openai_project_id']}, {shared}:\n{costs}"
        )
    return "\n\n".join(parts)


def _worst(pcts: Any) -> str:
    values = list(pcts)
    if any(p is None for p in values):
        return "unbounded"
    return max(values, key=lambda p: abs(float(p)), default="0.00")


@command(
    "reconcile",
    "compare the books with OpenAI's Usage and Costs APIs (default: "
    "the last 7 complete days not yet stable)",
    ("--day", {"metavar": "YYYY-MM-DD", "help": "this UTC day only (again if stable)"}),
    ("--show", {"action": "store_true", "help": "list stored reconciliations, run none"}),
    epilog="--day 2026-12-01",
)
def reconcile(api: Api, a: A) -> Out:
    if a.show:
        r = api("GET", "/reconciliations", day=a.day)
    else:
        r = api("POST", "/reconcile", given(day=a.day))
        if r.get("unmapped"):
            return r, (
                "no external key has an OpenAI project: record one with "
                "'tollgate key openai-ids KEY --project proj_... --key-id key_...'"
            )
    return r, show(r["data"])


@command(
    "reconciliations",
    "the stored reconciliations, newest day first",
    ("--day", {"metavar": "YYYY-MM-DD"}),
    ("--key", {"help": "an external key id"}),
    epilog="--key main",
)
def reconciliations(api: Api, a: A) -> Out:
    r = api("GET", "/reconciliations", day=a.day, external_key=a.key)
    return r, show(r["data"])
