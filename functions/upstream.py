"""The HTTP client to OpenAI (or any OpenAI-compatible base URL), behind one class.

One ``requests.Session`` per instance keeps connections to upstream alive between
calls (a TLS handshake to OpenAI costs tens of ms). Network failures become
``UpstreamUnavailable``/``UpstreamTimeout``; upstream's own 4xx/5xx are returned
as responses for the caller to pass through.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter

from functions.errors import UpstreamTimeout, UpstreamUnavailable

# Client headers worth passing on; everything else (cookies, the client's own
# Authorization, OpenAI-Organization/-Project, hop-by-hop) stays here.
_FORWARD = ("accept", "idempotency-key", "openai-beta", "user-agent")
_FORWARD_PREFIXES = ("x-stainless-",)
# Upstream headers never passed back: they name the organisation, set cookies for
# OpenAI's domain, or describe the upstream connection rather than ours.
_DROP_BACK = {
    "openai-organization", "openai-project", "set-cookie", "connection", "keep-alive",
    "transfer-encoding", "te", "trailer", "upgrade", "proxy-authenticate",
    "proxy-authorization", "content-length", "content-encoding", "alt-svc", "cf-ray",
    "server", "date", "strict-transport-security",
}


def forward_headers(client_headers: Mapping[str, str], secret: str) -> dict[str, str]:
    out = {"authorization": f"Bearer {secret}", "content-type": "application/json"}
    for name, value in client_headers.items():
        low = name.lower()
        if low in _FORWARD or low.startswith(_FORWARD_PREFIXES):
            out[low] = value
    return out


def response_headers(upstream_headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in upstream_headers.items() if k.lower() not in _DROP_BACK}


@dataclass
class UpstreamResponse:
    status: int
    headers: dict[str, str]  # lower-cased, as received
    body: bytes  # empty for a streamed response until read
    raw: requests.Response | None = None

    def iter_chunks(self) -> Iterator[bytes]:
        assert self.raw is not None
        # chunk_size=None yields data as it arrives rather than filling a buffer.
        yield from self.raw.iter_content(chunk_size=None)

    def close(self) -> None:
        if self.raw is not None:
            self.raw.close()


class Upstream:
    def __init__(self, connect_timeout_s: float, read_timeout_s: float,
                 pool_size: int = 64) -> None:
        self.timeout = (connect_timeout_s, read_timeout_s)
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # Never pick up proxy settings or .netrc credentials from the environment.
        self.session.trust_env = False

    def post(self, url: str, body: bytes, headers: Mapping[str, str],
             stream: bool = False) -> UpstreamResponse:
        try:
            r = self.session.post(url, data=body, headers=dict(headers), timeout=self.timeout,
                                  stream=stream)
        except requests.Timeout:
            raise UpstreamTimeout("The upstream API did not answer in time.") from None
        except requests.RequestException:
            raise UpstreamUnavailable("The upstream API could not be reached.") from None
        headers_out = {k.lower(): v for k, v in r.headers.items()}
        if stream and r.status_code == 200:
            return UpstreamResponse(r.status_code, headers_out, b"", r)
        try:
            content = r.content
        except requests.RequestException:
            raise UpstreamTimeout("The upstream API stopped answering mid-response.") from None
        finally:
            r.close()
        return UpstreamResponse(r.status_code, headers_out, content)
