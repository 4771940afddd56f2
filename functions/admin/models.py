"""``/models``: the models Tollgate can price and their dated prices. A price is added
with the day it takes effect; the previous one ends there, so a call is always priced
at the rate in force when it was made. ``load-prices`` takes them from the shipped
price table (``genai-prices``)."""

from __future__ import annotations

from typing import Any

from functions.admin.responses import Resp, ok
from functions.core import ids, pricing
from functions.core import validate as v
from functions.core.errors import InvalidRequest
from functions.core.holds import utcnow
from functions.store.price_loader import load_price_table
from functions.store.provision import Provisioner
from functions.store.views import Views

SERVICE_TIERS = ("flex", "priority", "scale", "ultrafast")


class Models:
    def __init__(self, prov: Provisioner, views: Views) -> None:
        self.prov = prov
        self.views = views

    def _json(self, model: str) -> dict[str, Any]:
        d = self.prov.get("models", ids.model(model), "model")
        history = [pricing.price_from_doc(p) for p in d.get("prices") or ()]
        return _summary(d, model) | {"prices": [_price_json(p) for p in history]}

    def index(self, **_: Any) -> Resp:
        models = sorted(self.views.all("models"), key=lambda m: str(m.get("id")))
        return ok({"data": [_summary(d) for d in models]})

    def create(self, actor: Any, body: Any, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"id"})
        model = _model_id(b.get("id"))
        self.prov.add_model(model, actor=actor.name)
        return ok(self._json(model), 201)

    def show(self, model: str, **_: Any) -> Resp:
        return ok(self._json(model))

    def add_cost(self, actor: Any, body: Any, model: str, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"valid_from", "input", "cached_input", "output", "cache_write", "tiers"})
        self.prov.get("models", ids.model(model), "model")
        tiers = {"default": _rates(b, "")}
        extra = b.get("tiers") or {}
        if not isinstance(extra, dict):
            raise InvalidRequest("'tiers' must map a service tier to its rates.", param="tiers")
        for tier, rates in extra.items():
            if tier not in SERVICE_TIERS or not isinstance(rates, dict):
                raise InvalidRequest(
                    f"'tiers.{tier}' is not a service tier with rates.", param="tiers"
                )
            tiers[tier] = _rates(rates, f"tiers.{tier}.")
        if "valid_from" not in b:
            raise InvalidRequest("Missing required field 'valid_from'.", param="valid_from")
        price = pricing.Price(
            valid_from=v.timestamp(b["valid_from"], "valid_from"),
            valid_to=None,
            tiers=tiers,
            source=f"admin:{actor.name}",
        )
        self.prov.add_price(model, price, actor=actor.name)
        return ok(self._json(model), 201)

    def load_prices(self, actor: Any, body: Any, **_: Any) -> Resp:
        b = v.body_object(body)
        v.only_fields(b, {"models"})
        return ok(load_price_table(self.prov, v.string_list(b, "models"), actor=actor.name))


def _summary(d: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    """A model with the price in force now."""
    history = [pricing.price_from_doc(p) for p in d.get("prices") or ()]
    current = pricing.price_in_force(history, utcnow())
    return {
        "id": d.get("id", model),
        "created": d.get("created"),
        "price": _price_json(current) if current else None,
    }


def _price_json(p: pricing.Price) -> dict[str, Any]:
    """A price with its rates in dollars per million tokens, as they are entered."""
    d = pricing.price_to_doc(p)
    for tiers in (d.get("tiers") or {}, d.get("long_context_tiers") or {}):
        for rates in tiers.values():
            for k, r in list(rates.items()):
                rates[k] = pricing.rate_to_usd_per_mtok(r)
    return d


def _model_id(value: Any, name: str = "id") -> str:
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= 256
        or not value.isprintable()
        or not value.isascii()
        or not value[:1].isalnum()
        or value.strip() != value
    ):
        raise InvalidRequest(f"'{name}' must be a model name.", param=name)
    return value


def _rates(b: dict[str, Any], prefix: str) -> pricing.Rates:
    def rate(name: str, required: bool) -> int | None:
        try:
            return v.usd_per_mtok(b, name, required=required)
        except InvalidRequest as e:
            raise InvalidRequest(e.message, param=prefix + name) from None

    return pricing.Rates(
        input=rate("input", True) or 0,
        output=rate("output", True) or 0,
        cached_input=rate("cached_input", False),
        cache_write=rate("cache_write", False),
    )
