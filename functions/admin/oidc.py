"""Cloud Scheduler's identity: a Google-signed ID token (OIDC) of one service account.

The scheduler jobs that run ``POST /reconcile`` and ``POST /sweep`` carry no admin
token (a token in a job's definition would be readable by anyone who can read the
job). Cloud Scheduler instead signs in as the service account ``tollgate-scheduler``
and sends ``Authorization: Bearer <ID token>`` with the audience it was told (the
admin function's URL). This class accepts such a token only if Google's signature
checks out against Google's published certificates, it has not expired, its audience
is the admin function's URL and its email is the scheduler's service account, verified.
With either setting unset, no token is accepted.
"""

from __future__ import annotations

from typing import Any

import requests

from functions.core.errors import InvalidApiKey

GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")


def looks_like_jwt(token: str) -> bool:
    """Three base64url parts: never an admin token (``tga_``) or a proxy key (``tg_``)."""
    return token.startswith("eyJ") and token.count(".") == 2


class SchedulerTokens:
    def __init__(
        self, audience: str, email: str, certs_url: str, session: requests.Session | None = None
    ) -> None:
        self.audience = audience.rstrip("/")
        self.email = email
        self.certs_url = certs_url
        self._session = session

    @property
    def enabled(self) -> bool:
        return bool(self.audience and self.email)

    def verify(self, token: str) -> str:
        """The service account's email if ``token`` is the scheduler's; else a 401 that
        says what was wrong (never the token)."""
        if not self.enabled:
            raise InvalidApiKey(
                "This admin function accepts no scheduler tokens "
                "(TOLLGATE_SCHEDULER_AUDIENCE / TOLLGATE_SCHEDULER_SA unset)."
            )
        from google.auth import exceptions as gexc
        from google.auth.transport.requests import Request
        from google.oauth2 import id_token

        session = self._session or requests.Session()
        try:
            claims: dict[str, Any] = dict(
                id_token.verify_token(
                    token,
                    Request(session),
                    audience=[self.audience, self.audience + "/"],
                    certs_url=self.certs_url,
                    clock_skew_in_seconds=10,
                )
            )
        except (ValueError, gexc.GoogleAuthError) as e:
            # google-auth's messages name the reason (expired, wrong audience, bad
            # signature) and may quote claims, never the token itself
            raise InvalidApiKey(
                f"The scheduler's ID token was refused: {str(e).splitlines()[0][:200]}"
            ) from None
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise InvalidApiKey("The scheduler's ID token was not issued by Google.")
        if claims.get("email") != self.email or not claims.get("email_verified"):
            raise InvalidApiKey("The ID token is not the scheduler service account's.")
        return self.email
