"""All configuration, read from the environment in one place.

``Settings.from_env()`` is the only reader of ``os.environ`` in the functions; every
variable is listed in the README's configuration table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not 0 < value < float("inf"):  # NaN and inf too: a socket refuses them at the first call
        raise ValueError(f"{name} must be a finite number > 0, got {raw!r}")
    return value


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() in ("1", "on", "true", "yes"):
        return True
    if raw.lower() in ("0", "off", "false", "no"):
        return False
    raise ValueError(f"{name} must be on or off, got {raw!r}")  # not a typo taken as "on"


@dataclass(frozen=True)
class Settings:
    gcp_project: str
    database: str = "tollgate"
    emulator_host: str | None = None
    upstream_base_url: str = "https://api.openai.com/v1"
    upstream_connect_timeout_s: float = 10.0
    upstream_timeout_s: float = 600.0
    max_body_bytes: int = 8 * 1024 * 1024
    function_timeout_s: int = 900
    hold_margin_s: int = 300
    secret_backend: str = "local"  # "local" or "gcp"
    secrets_file: str = ".local/secrets.json"
    safety_salt: str = ""
    default_max_output_tokens: int = 4096
    # gen2 cuts a streamed response at 10 MB; stop a little before, with an error event
    stream_cap_bytes: int = 9_500_000
    # escrow grants (escrow.py): on, no draw 15 s after a grant's last sync, closed by
    # the sweep 60 s after that
    escrow: bool = True
    grant_draw_window_s: int = 15
    grant_close_margin_s: int = 60
    # reconciliation (reconcile.py): OpenAI's organisation Usage/Costs APIs, the drift
    # (percent of OpenAI's figure) that alerts, and the Cloud Scheduler identity whose
    # Google-signed ID token may call POST /reconcile and /sweep (unset: none may)
    usage_api_base_url: str = "https://api.openai.com/v1"
    reconcile_drift_percent: float = 2.0
    scheduler_audience: str = ""
    scheduler_sa: str = ""
    oidc_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"

    @property
    def hold_ttl_s(self) -> int:
        """How long a hold lives: a stream may run until the function timeout, so a hold
        must outlive it, or the sweep would book a call that is still running."""
        return self.function_timeout_s + self.hold_margin_s

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        project = (
            env.get("TOLLGATE_GCP_PROJECT")
            or env.get("GOOGLE_CLOUD_PROJECT")
            or env.get("GCLOUD_PROJECT")
            or ""
        ).strip()
        if not project:
            # Without an explicit project the Firestore client silently picks
            # "google-cloud-firestore-emulator" on the emulator; refuse instead.
            raise ValueError("set TOLLGATE_GCP_PROJECT (or GOOGLE_CLOUD_PROJECT)")
        backend = env.get("TOLLGATE_SECRET_BACKEND", "").strip() or (
            "local" if env.get("FIRESTORE_EMULATOR_HOST") else "gcp"
        )
        if backend not in ("local", "gcp"):
            raise ValueError(f"TOLLGATE_SECRET_BACKEND must be local or gcp, got {backend!r}")
        return cls(
            gcp_project=project,
            database=env.get("TOLLGATE_DATABASE", "").strip() or "tollgate",
            emulator_host=env.get("FIRESTORE_EMULATOR_HOST") or None,
            upstream_base_url=(
                env.get("OPENAI_BASE_URL", "").strip() or "https://api.openai.com/v1"
            ).rstrip("/"),
            upstream_connect_timeout_s=_float(env, "TOLLGATE_UPSTREAM_CONNECT_TIMEOUT_S", 10.0),
            upstream_timeout_s=_float(env, "TOLLGATE_UPSTREAM_TIMEOUT_S", 600.0),
            max_body_bytes=_int(env, "TOLLGATE_MAX_BODY_BYTES", 8 * 1024 * 1024, 1024),
            function_timeout_s=_int(env, "TOLLGATE_FUNCTION_TIMEOUT_S", 900, 1),
            hold_margin_s=_int(env, "TOLLGATE_HOLD_MARGIN_S", 300, 0),
            secret_backend=backend,
            secrets_file=env.get("TOLLGATE_SECRETS_FILE", "").strip() or ".local/secrets.json",
            safety_salt=env.get("TOLLGATE_SAFETY_SALT", ""),
            default_max_output_tokens=_int(env, "TOLLGATE_DEFAULT_MAX_OUTPUT_TOKENS", 4096, 1),
            stream_cap_bytes=_int(env, "TOLLGATE_STREAM_CAP_BYTES", 9_500_000, 1024),
            escrow=_switch(env, "TOLLGATE_ESCROW", True),
            grant_draw_window_s=_int(env, "TOLLGATE_GRANT_DRAW_WINDOW_S", 15, 1),
            grant_close_margin_s=_int(env, "TOLLGATE_GRANT_CLOSE_MARGIN_S", 60, 1),
            usage_api_base_url=(
                env.get("TOLLGATE_USAGE_API_BASE_URL", "").strip() or "https://api.openai.com/v1"
            ).rstrip("/"),
            reconcile_drift_percent=_float(env, "TOLLGATE_RECONCILE_DRIFT_PERCENT", 2.0),
            scheduler_audience=env.get("TOLLGATE_SCHEDULER_AUDIENCE", "").strip().rstrip("/"),
            scheduler_sa=env.get("TOLLGATE_SCHEDULER_SA", "").strip(),
            oidc_certs_url=(
                env.get("TOLLGATE_OIDC_CERTS_URL", "").strip()
                or "https://www.googleapis.com/oauth2/v1/certs"
            ),
        )
