"""``/sweep`` and ``/whoami``: the periodic clean-up Cloud Scheduler calls (expired holds
booked, idle escrow grants closed, failed budget alerts resent) and who a token
belongs to (the console's sign-in)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from functions.admin.responses import Resp, ok
from functions.store.alerts import Alerts
from functions.store.ledger import Ledger
from functions.store.writer import Writer

# one sweep call books at most this many holds; the next scheduled run takes the rest
SWEEP_MAX = 10_000


class Operations:
    def __init__(self, ledger: Callable[[], Ledger], alerts: Alerts, writer: Writer) -> None:
        self.ledger = ledger
        self.alerts = alerts
        self.writer = writer

    def sweep(self, actor: Any, **_: Any) -> Resp:
        ledger, total = self.ledger(), 0
        while (n := ledger.sweep(limit=100)) > 0 and total < SWEEP_MAX:
            total += n
        counts = {
            "swept": ledger.sweeper.holds_swept,
            "grants_closed": ledger.sweeper.grants_closed,
            "alerts_resent": self.alerts.resend_due(),
        }
        self.writer.audit_now(actor.name, "holds.sweep", "*", counts)
        return ok(counts)

    def whoami(self, actor: Any, **_: Any) -> Resp:
        """Who signed in: the console shows an administrator everything and a lead only
        the member pages of their project (the API refuses them the rest anyway)."""
        return ok(
            {
                "actor": actor.name,
                "kind": "lead" if actor.lead_of else "admin",
                "project": actor.lead_of,
                "user": actor.user,
            }
        )
