"""The admin console: a static page (``web/admin/``) served by the ``admin`` function.

The page itself holds nothing secret, so its files are served without authorisation;
everything it shows comes from the admin API, called by the page with the token the
user typed (kept in ``sessionStorage``, sent only in the ``Authorization`` header).

Where the page lives: ``…/console/`` of the function (``/admin/console/`` at the root
of a Cloud Run URL, which the admin API's ``/admin`` prefix rule covers). Its files are
referenced relative to that folder (``console.js``), so they reach us as
``/console/console.js`` whatever prefix the function has; ``…/console`` without the
slash is redirected to ``console/`` so those relative URLs resolve. After a trailing
slash the prefix can appear twice (``…/admin/admin/console/``), so leading ``/admin``
segments are all stripped here, as the log page strips ``/log``.

The function's root is not redirected: a GET of ``/`` stays an OpenAI-shaped 404 (the
admin API's contract for unknown paths, held by the fuzz tests), whose message says
where the console is.
"""

from __future__ import annotations

import functools
import hashlib
import mimetypes
from pathlib import Path

import flask

from functions.core.errors import MethodNotAllowed, NotFound, TollgateError
from functions.httpio import SECURITY_HEADERS, error_response

WEB = Path(__file__).resolve().parents[2] / "web" / "admin"
ASSETS = {
    "/": "index.html",
    "/console.css": "console.css",
    "/console.js": "console.js",
    "/views.js": "views.js",
    "/reports.js": "reports.js",
    "/shared.js": "../shared.js",  # web/shared.js: with the log page
    "/shared.css": "../shared.css",
}
PREFIX = "/console"


def console_path(path: str) -> str | None:
    """The asset path (``/``, ``/console.js``, ...) of a request path, ``""`` for the
    function's root, or None when the path is not the console's (an API route)."""
    while path == "/admin" or path.startswith("/admin/"):
        path = path[6:]
    if path in ("", "/"):
        return ""
    if path == PREFIX:
        return "/console"  # no trailing slash: the relative asset URLs need one
    if path.startswith(PREFIX + "/"):
        return path[len(PREFIX) :]
    return None


@functools.cache
def _asset(name: str) -> tuple[bytes, str, str]:
    body = (WEB / name).read_bytes()
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return body, f"{kind}; charset=utf-8", '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def serve(request: flask.Request, where: str) -> flask.Response:
    """The console's answer to a request whose ``console_path`` is ``where``."""
    try:
        resp = _serve(request, where)
    except TollgateError as err:
        resp = error_response(err)
    resp.headers.update(SECURITY_HEADERS)
    return resp


def _serve(request: flask.Request, where: str) -> flask.Response:
    if where == "":
        raise NotFound(
            "This is Tollgate's admin API (docs/admin-api.md); the admin "
            "console is at console/ of this function's URL, e.g. …/admin/console/."
        )
    if request.method not in ("GET", "HEAD"):
        raise MethodNotAllowed(f"The console only answers GET, not {request.method}.")
    if where == "/console":
        # a relative Location, resolved by the browser against the URL it asked for
        return flask.Response(status=302, headers={"Location": "console/"})
    if where in ASSETS:
        body, kind, etag = _asset(ASSETS[where])
        if request.headers.get("If-None-Match") == etag:
            return flask.Response(status=304, headers={"ETag": etag})
        return flask.Response(
            body, content_type=kind, headers={"ETag": etag, "Cache-Control": "no-cache"}
        )
    raise NotFound(f"Nothing at {where[:200]} in the console; it is at console/.")
