"""The admin API's JSON: Firestore values made JSON, money as ``*_usd`` strings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import flask

from functions.core import pricing
from functions.httpio import json_response

Resp = flask.Response


def jsonable(obj: Any) -> Any:
    """Firestore values to JSON: datetimes as ISO 8601 UTC, ``*_nano`` money also as
    ``*_usd`` decimal strings."""
    if isinstance(obj, datetime):
        return obj.isoformat().replace("+00:00", "Z")
    if isinstance(obj, dict):
        out = {k: jsonable(x) for k, x in obj.items()}
        for k, x in obj.items():
            if k.endswith("_nano") and (x is None or isinstance(x, int)):
                out[k[:-5] + "_usd"] = None if x is None else pricing.format_usd(x)
        return out
    if isinstance(obj, (list, tuple)):
        return [jsonable(x) for x in obj]
    return obj


def ok(obj: Any, status: int = 200) -> Resp:
    return json_response(jsonable(obj), status)
