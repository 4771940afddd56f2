"""Every error Tollgate itself answers with, as one exception family.

Each class maps to exactly one OpenAI-shaped error (status, type, code), so a
handler can turn any ``TollgateError`` into
``{"error": {"message", "type", "param", "code"}}`` and anything else into a
generic 500 that says nothing about the cause.

    TollgateError                      500 api_error / internal_error
    ├── InvalidRequest                 400 invalid_request_error / invalid_request
    │   ├── UnsupportedParameter       400 invalid_request_error / unsupported_parameter
    │   └── AdminKeyRefused            400 invalid_request_error / admin_key_refused
    ├── RequestTooLarge                413 invalid_request_error / request_too_large
    ├── InvalidApiKey                  401 invalid_request_error / invalid_api_key
    ├── PermissionDenied               403 permission_error / permission_denied
    │   ├── ModelNotAllowed            403 permission_error / model_not_allowed
    │   └── ModelNotPriced             403 permission_error / model_not_priced
    ├── NotFound                       404 invalid_request_error / unknown_url
    │   ├── ModelNotFound              404 invalid_request_error / model_not_found
    │   └── ResourceNotFound           404 invalid_request_error / not_found
    ├── MethodNotAllowed               405 invalid_request_error / method_not_allowed
    ├── Conflict                       409 invalid_request_error / conflict
    ├── BudgetExceeded                 429 insufficient_quota / budget_exceeded
    ├── RateLimited                    429 rate_limit_error / rate_limit_exceeded
    ├── UpstreamUnavailable            502 api_error / upstream_unavailable
    ├── UpstreamAuthError              502 api_error / upstream_auth_error
    ├── UpstreamBadResponse            502 api_error / upstream_bad_response
    ├── ServiceUnavailable             503 api_error / service_unavailable
    └── UpstreamTimeout                504 api_error / upstream_timeout

Messages are written for the caller: they name the field or limit at fault and
never contain a key, a secret or a stack trace.
"""

from __future__ import annotations

import json
import re
from typing import Any

_KEYLIKE = re.compile(
    r"(tga_[A-Za-z0-9_\-]{8,}"  # admin tokens
    r"|tg_[A-Za-z0-9]{8,}"  # proxy keys
    r"|sk-[A-Za-z0-9_\-]{8,}"  # OpenAI keys
    r"|Bearer\s+[A-Za-z0-9_\-.]{8,})"
)


def redact(text: str) -> str:
    """Replace anything that looks like a key with a short marker (for logs and messages)."""
    return _KEYLIKE.sub(lambda m: m.group(0)[:3] + "…redacted", text)


class TollgateError(Exception):
    status = 500
    type = "api_error"
    code = "internal_error"

    def __init__(
        self,
        message: str = "Internal error in the Tollgate proxy.",
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = redact(message)
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_json(self) -> bytes:
        return json.dumps(self.body()).encode()


class InvalidRequest(TollgateError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"


class AdminKeyRefused(InvalidRequest):
    """OpenAI refused the organisation's admin key (Usage/Costs APIs, 401/403): a 400 for
    whoever sent or stored it."""

    code = "admin_key_refused"


class RequestTooLarge(TollgateError):
    status, type, code = 413, "invalid_request_error", "request_too_large"


class InvalidApiKey(TollgateError):
    # OpenAI answers a bad key with type invalid_request_error and this code; the SDK
    # maps the status to AuthenticationError either way.
    status, type, code = 401, "invalid_request_error", "invalid_api_key"


class PermissionDenied(TollgateError):
    status, type, code = 403, "permission_error", "permission_denied"


class ModelNotAllowed(PermissionDenied):
    code = "model_not_allowed"


class ModelNotPriced(PermissionDenied):
    code = "model_not_priced"


class NotFound(TollgateError):
    status, type, code = 404, "invalid_request_error", "unknown_url"


class ModelNotFound(NotFound):
    code = "model_not_found"


class ResourceNotFound(NotFound):
    code = "not_found"


class MethodNotAllowed(TollgateError):
    status, type, code = 405, "invalid_request_error", "method_not_allowed"


class Conflict(TollgateError):
    status, type, code = 409, "invalid_request_error", "conflict"


class BudgetExceeded(TollgateError):
    status, type, code = 429, "insufficient_quota", "budget_exceeded"

    def __init__(self, message: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        # The SDK retries every 429 unless told not to; a budget does not refill in seconds.
        self.headers.setdefault("x-should-retry", "false")


class RateLimited(TollgateError):
    status, type, code = 429, "rate_limit_error", "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: int, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.headers["retry-after"] = str(max(1, int(retry_after_s)))


class UpstreamUnavailable(TollgateError):
    status, type, code = 502, "api_error", "upstream_unavailable"


class UpstreamAuthError(TollgateError):
    status, type, code = 502, "api_error", "upstream_auth_error"


class UpstreamBadResponse(TollgateError):
    status, type, code = 502, "api_error", "upstream_bad_response"


class ServiceUnavailable(TollgateError):
    status, type, code = 503, "api_error", "service_unavailable"


class UpstreamTimeout(TollgateError):
    status, type, code = 504, "api_error", "upstream_timeout"
