"""The Cloud Functions entry points. Each is deployed as its own function from the
same source (``gcloud functions deploy NAME --entry-point NAME``); everything they
do lives in the modules they call.

Note: a function named ``openai`` lives here, so this module must never
``import openai`` (the SDK) - the two would share one name.
"""

import flask
import functions_framework

from functions.admin.app import admin_for
from functions.httpio import serve
from functions.log.app import log_for
from functions.proxy.app import proxy_for


@functions_framework.http
def openai(request: flask.Request) -> flask.Response:
    """The proxy: OpenAI's API for holders of a Tollgate key (SPEC §2)."""
    return serve(proxy_for, request, "openai")


@functions_framework.http
def admin(request: flask.Request) -> flask.Response:
    """The admin API (SPEC §3): users, keys, models, projects, members, usage."""
    return serve(admin_for, request, "admin")


@functions_framework.http
def log(request: flask.Request) -> flask.Response:
    """A member's page of their own calls and spend, and its JSON API (SPEC §4)."""
    return serve(log_for, request, "log")
