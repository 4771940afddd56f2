"""``tollgate`` (or ``python -m tollgate_cli``): the command-line client of the admin API
(docs/admin-api.md). Standard library and ``requests`` only, so it runs anywhere the
admin URL is reachable, without the functions' cloud dependencies.

Exit codes: 0 done, 1 the API (or the network) said no, 2 the command line is wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from os import environ

# manage and reconcile register their commands in COMMANDS when imported (commands.py
# holds the framework and the read-only commands; they import it, not the other way)
from tollgate_cli import manage, reconcile  # noqa: F401
from tollgate_cli.api import Api, Failure, table  # noqa: F401 - table: for tests
from tollgate_cli.commands import COMMANDS

PROG = "tollgate"
EPILOG = f"""examples:
  export TOLLGATE_ADMIN_URL=http://127.0.0.1:8082 TOLLGATE_ADMIN_TOKEN=tga_...
  {PROG} user create carol --name Carol
  {PROG} project create lab --external-key main --budget 5 --models gpt-4o-mini
  {PROG} member add lab carol
  {PROG} usage --project lab --group-by user"""
GROUPS = {
    "user": "users (people holding keys)",
    "key": "members' named proxy keys and their limits; external (OpenAI) keys",
    "topup": "top-ups: $ added to a budget until a date",
    "model": "models and their dated prices (USD per 1M tokens)",
    "prices": "the shipped OpenAI price table",
    "project": "projects: budget, allowed models, external key",
    "member": "project members and their proxy keys (leads may use these)",
    "limit": "per-model limits of a project or of one of its members",
    "openai-admin-key": "OpenAI's organisation admin key, for reconciliation",
}


# --- the parser and main ---------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    # The global options work before or after the command; SUPPRESS keeps a command's
    # unset option from overwriting one given before it.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--url", help="admin function URL (env TOLLGATE_ADMIN_URL)")
    common.add_argument(
        "--token",
        help="an admin token, or a lead's proxy key for member commands (env TOLLGATE_ADMIN_TOKEN)",
    )
    common.add_argument("--json", action="store_true", help="print the API's JSON answer")
    fmt = argparse.RawDescriptionHelpFormatter
    top = argparse.ArgumentParser(
        prog=PROG,
        parents=[common],
        formatter_class=fmt,
        epilog=EPILOG,
        description="Manage Tollgate through its admin API (docs/admin-api.md).",
    )
    subs = {"": top.add_subparsers(required=True, metavar="COMMAND")}
    for name, cmd in COMMANDS.items():
        group, _, leaf = name.rpartition(" ")
        if group not in subs:
            g = subs[""].add_parser(group, help=GROUPS[group], description=GROUPS[group])
            subs[group] = g.add_subparsers(required=True, metavar="COMMAND")
        p = subs[group].add_parser(
            leaf,
            help=cmd.help,
            description=cmd.help,
            epilog=cmd.epilog,
            parents=[common],
            formatter_class=fmt,
        )
        p.set_defaults(run=cmd.run)
        one_of = None
        for arg in cmd.args:
            flag, options = (arg, {}) if isinstance(arg, str) else (arg[0], dict(arg[1]))
            if options.pop("exclusive", False):
                one_of = one_of or p.add_mutually_exclusive_group(required=True)
                one_of.add_argument(flag, **options)
            else:
                p.add_argument(flag, **options)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    try:
        a = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help and usage errors: a code, so callers can test it
        return exc.code if isinstance(exc.code, int) else 2
    url = getattr(a, "url", None) or environ.get("TOLLGATE_ADMIN_URL")
    token = getattr(a, "token", None) or environ.get("TOLLGATE_ADMIN_TOKEN")
    for value, what, flag, env in (
        (url, "admin URL", "--url", "TOLLGATE_ADMIN_URL"),
        (token, "token", "--token", "TOLLGATE_ADMIN_TOKEN"),
    ):
        if not value:
            print(f"error: no {what}: pass {flag} or set {env}", file=sys.stderr)
            return 2
    try:
        data, text = a.run(Api(str(url), str(token)), a)
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # e.g. at the secret prompt
        return 130
    if data is not None:
        print(json.dumps(data, indent=2) if getattr(a, "json", False) else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
