"""Cloud Scheduler's ID tokens: signed here with a locally generated RSA key whose
certificate is served from loopback in Google's certs format ({kid: PEM}), then
verified by ``oidc.SchedulerTokens`` and by the admin function's two scheduled routes."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from functions.admin.oidc import SchedulerTokens, looks_like_jwt
from functions.core.errors import InvalidApiKey

AUDIENCE = "https://admin-abc123-ew.a.run.app"
SA = "tollgate-scheduler@demo-project.iam.gserviceaccount.com"
KID = "test-kid-1"


def _key_and_cert() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tollgate-test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return pem_key, cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def google() -> Iterator[dict[str, Any]]:
    """A stand-in for Google's signer: its private key, and its certs URL on loopback."""
    pem_key, pem_cert = _key_and_cert()
    body = json.dumps({KID: pem_cert.decode()}).encode()

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {
        "signer": crypt.RSASigner.from_string(pem_key, KID),
        "certs_url": f"http://127.0.0.1:{server.server_port}/oauth2/v1/certs",
    }
    server.shutdown()


def token(google: dict[str, Any], **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "email": SA,
        "email_verified": True,
        "sub": "1234567890",
        "iat": now,
        "exp": now + 3600,
        **claims,
    }
    return jwt.encode(google["signer"], payload).decode()


def verifier(google: dict[str, Any], audience: str = AUDIENCE, email: str = SA) -> SchedulerTokens:
    return SchedulerTokens(audience, email, google["certs_url"])


def test_the_schedulers_token_is_accepted(google):
    t = token(google)
    assert looks_like_jwt(t) and not looks_like_jwt("tga_abc.def.ghi")
    assert verifier(google).verify(t) == SA
    assert verifier(google, AUDIENCE + "/").verify(t) == SA  # a trailing slash is the same URL


@pytest.mark.parametrize(
    "claims, why",
    [
        ({"aud": "https://someone-else.a.run.app"}, "audience"),
        ({"email": "intruder@demo-project.iam.gserviceaccount.com"}, "service account"),
        ({"email_verified": False}, "service account"),
        ({"iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}, "expired"),
        ({"iss": "https://evil.example.com"}, "issued"),
    ],
)
def test_a_wrong_token_is_refused(google, claims, why):
    with pytest.raises(InvalidApiKey) as e:
        verifier(google).verify(token(google, **claims))
    assert e.value.status == 401 and why in e.value.message.lower()


def test_a_token_signed_by_another_key_is_refused(google):
    other = crypt.RSASigner.from_string(_key_and_cert()[0], KID)
    forged = jwt.encode(
        other,
        {
            "iss": "https://accounts.google.com",
            "aud": AUDIENCE,
            "email": SA,
            "email_verified": True,
            "iat": int(time.time()),
            "exp": int(time.time()) + 60,
        },
    ).decode()
    with pytest.raises(InvalidApiKey):
        verifier(google).verify(forged)


def test_unset_settings_accept_no_token(google):
    with pytest.raises(InvalidApiKey) as e:
        SchedulerTokens("", SA, google["certs_url"]).verify(token(google))
    assert "TOLLGATE_SCHEDULER_AUDIENCE" in e.value.message


def test_the_scheduler_may_sweep_and_nothing_else(google, world, admin_client):
    os.environ.update(
        {
            "TOLLGATE_SCHEDULER_AUDIENCE": AUDIENCE,
            "TOLLGATE_SCHEDULER_SA": SA,
            "TOLLGATE_OIDC_CERTS_URL": google["certs_url"],
        }
    )
    auth = {"Authorization": f"Bearer {token(google)}"}
    r = admin_client.post("/sweep", headers=auth)
    assert r.status_code == 200, r.get_data(True)
    audit = [s.to_dict() for s in world.db.collection("audit").stream()]
    assert any(a["actor"] == f"scheduler:{SA}" and a["action"] == "holds.sweep" for a in audit)
    for method, path in (("GET", "/users"), ("POST", "/users"), ("GET", "/reconciliations")):
        r = admin_client.open(path, method=method, headers=auth, json={})
        assert r.status_code == 401, path
    bad = {"Authorization": f"Bearer {token(google, aud='https://other.a.run.app')}"}
    assert admin_client.post("/sweep", headers=bad).status_code == 401
