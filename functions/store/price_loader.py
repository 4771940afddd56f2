"""Loading the shipped price table (from genai-prices) into the ``models`` collection.

Idempotent: a price already present with the same start and rates is left alone; a
stored price with the same start but different rates is reported, never
overwritten (an administrator set it on purpose)."""

from __future__ import annotations

from typing import Any

from functions.core import ids, pricing
from functions.core.errors import InvalidRequest
from functions.core.price_table import openai_price_table, source
from functions.store.provision import Provisioner


def load_price_table(prov: Provisioner, only: list[str] | None, *, actor: str) -> dict[str, Any]:
    entries, skipped = openai_price_table()
    if only is not None:
        known = {e.model for e in entries} | {s.model for s in skipped}
        unknown = [m for m in only if m not in known]
        if unknown:
            raise InvalidRequest(
                f"'{unknown[0]}' is not in the price table ({source()}).", param="models"
            )
        entries = [e for e in entries if e.model in only]
        skipped = [s for s in skipped if s.model in only]
    refs = [prov.ref("models", ids.model(e.model)) for e in entries]
    stored = {s.id: s.to_dict() or {} for s in prov.db.get_all(refs) if s.exists}
    loaded = unchanged = 0
    conflicts = []
    for entry, ref in zip(entries, refs, strict=True):
        have = {
            p.valid_from: p
            for p in (pricing.price_from_doc(d) for d in stored.get(ref.id, {}).get("prices") or ())
        }
        changed = False
        for price in entry.prices:
            old = have.get(price.valid_from)
            if old is None:
                prov.add_price(entry.model, price, actor=actor)
                changed = True
            elif (old.tiers, old.long_context_tiers) != (price.tiers, price.long_context_tiers):
                conflicts.append(
                    {
                        "model": entry.model,
                        "valid_from": price.valid_from,
                        "reason": "a different price is stored for this date; kept",
                    }
                )
        loaded += changed
        unchanged += not changed
    return {
        "source": source(),
        "loaded": loaded,
        "unchanged": unchanged,
        "conflicts": conflicts,
        "skipped": [{"model": s.model, "reason": s.reason} for s in skipped],
    }
