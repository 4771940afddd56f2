"""A function with none of Tollgate's work, for the benchmark's platform baseline.

It forwards the body to the fake upstream with the proxy's own HTTP client
(``functions.proxy.upstream.Upstream``) and returns the answer: one more HTTP hop through
functions-framework and gunicorn, exactly as the ``openai`` function has, but no key
check, no Firestore, no estimate. ``proxy - passthrough`` is then Tollgate's own cost.
"""

from __future__ import annotations

import functools
import os

import flask

from functions.proxy.upstream import Upstream, response_headers


@functools.cache
def _upstream() -> Upstream:
    return Upstream(10.0, 120.0)


def relay(request: flask.Request) -> flask.Response:
    resp = _upstream().post(
        os.environ["OPENAI_BASE_URL"] + "/chat/completions",
        request.get_data(),
        {
            "authorization": "Bearer " + os.environ["BENCH_UPSTREAM_KEY"],
            "content-type": "application/json",
        },
    )
    return flask.Response(resp.body, status=resp.status, headers=response_headers(resp.headers))
