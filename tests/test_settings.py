"""functions/core/settings.py: ``Settings.from_env`` with explicit environments (defaults,
every variable, clear errors for bad values) and the README's configuration table,
which must list every variable it reads."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from functions.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BASE = {"TOLLGATE_GCP_PROJECT": "acme-prod"}

INT_VARS = {  # variable: smallest accepted value
    "TOLLGATE_MAX_BODY_BYTES": 1024,
    "TOLLGATE_FUNCTION_TIMEOUT_S": 1,
    "TOLLGATE_HOLD_MARGIN_S": 0,
    "TOLLGATE_DEFAULT_MAX_OUTPUT_TOKENS": 1,
    "TOLLGATE_STREAM_CAP_BYTES": 1024,
    "TOLLGATE_GRANT_DRAW_WINDOW_S": 1,
    "TOLLGATE_GRANT_CLOSE_MARGIN_S": 1,
}
FLOAT_VARS = (
    "TOLLGATE_UPSTREAM_CONNECT_TIMEOUT_S",
    "TOLLGATE_UPSTREAM_TIMEOUT_S",
    "TOLLGATE_RECONCILE_DRIFT_PERCENT",
)


def load(**env: str) -> Settings:
    return Settings.from_env({**BASE, **env})


def bad(env: Mapping[str, str]) -> str:
    with pytest.raises(ValueError) as info:
        Settings.from_env(env)
    return str(info.value)


# --------------------------------------------------------------------------- defaults


def test_defaults_are_the_documented_ones():
    s = load()
    assert s.gcp_project == "acme-prod"
    assert s.database == "tollgate"
    assert s.emulator_host is None
    assert s.upstream_base_url == "https://api.openai.com/v1"
    assert (s.upstream_connect_timeout_s, s.upstream_timeout_s) == (10.0, 600.0)
    assert s.max_body_bytes == 8 * 1024 * 1024
    assert (s.function_timeout_s, s.hold_margin_s) == (900, 300)
    assert s.hold_ttl_s == 1200
    assert s.secret_backend == "gcp"  # not on the emulator: Secret Manager
    assert s.secrets_file == ".local/secrets.json"
    assert s.safety_salt == ""
    assert s.default_max_output_tokens == 4096
    assert s.stream_cap_bytes == 9_500_000
    assert s.escrow is True
    assert (s.grant_draw_window_s, s.grant_close_margin_s) == (15, 60)
    assert s.usage_api_base_url == "https://api.openai.com/v1"
    assert s.reconcile_drift_percent == 2.0
    assert (s.scheduler_audience, s.scheduler_sa) == ("", "")
    assert s.oidc_certs_url == "https://www.googleapis.com/oauth2/v1/certs"


def test_empty_or_blank_values_mean_the_default():
    blank = {
        name: "  "
        for name in (
            *INT_VARS,
            *FLOAT_VARS,
            "TOLLGATE_DATABASE",
            "OPENAI_BASE_URL",
            "TOLLGATE_SECRETS_FILE",
            "TOLLGATE_USAGE_API_BASE_URL",
            "TOLLGATE_SECRET_BACKEND",
            "TOLLGATE_OIDC_CERTS_URL",
        )
    }
    assert load(**blank) == load()


# --------------------------------------------------------------------------- every variable


def test_every_variable_is_read():
    s = load(
        TOLLGATE_DATABASE="tg-eu",
        FIRESTORE_EMULATOR_HOST="127.0.0.1:8681",
        OPENAI_BASE_URL="https://llm.example.com/v1/",
        TOLLGATE_UPSTREAM_CONNECT_TIMEOUT_S="2.5",
        TOLLGATE_UPSTREAM_TIMEOUT_S="30",
        TOLLGATE_MAX_BODY_BYTES="2048",
        TOLLGATE_FUNCTION_TIMEOUT_S=" 60 ",
        TOLLGATE_HOLD_MARGIN_S="0",
        TOLLGATE_SECRET_BACKEND="gcp",
        TOLLGATE_SECRETS_FILE="/srv/tollgate/secrets.json",
        TOLLGATE_SAFETY_SALT="pepper",
        TOLLGATE_DEFAULT_MAX_OUTPUT_TOKENS="512",
        TOLLGATE_STREAM_CAP_BYTES="100000",
        TOLLGATE_ESCROW="off",
        TOLLGATE_GRANT_DRAW_WINDOW_S="5",
        TOLLGATE_GRANT_CLOSE_MARGIN_S="7",
        TOLLGATE_USAGE_API_BASE_URL="http://127.0.0.1:9/v1/",
        TOLLGATE_RECONCILE_DRIFT_PERCENT="0.5",
        TOLLGATE_SCHEDULER_AUDIENCE=" https://r-p.cloudfunctions.net/admin/ ",
        TOLLGATE_SCHEDULER_SA=" tollgate-scheduler@p.iam.gserviceaccount.com ",
        TOLLGATE_OIDC_CERTS_URL="http://127.0.0.1:9/certs",
    )
    assert s.database == "tg-eu"
    assert s.emulator_host == "127.0.0.1:8681"
    assert s.upstream_base_url == "https://llm.example.com/v1"  # no trailing slash
    assert (s.upstream_connect_timeout_s, s.upstream_timeout_s) == (2.5, 30.0)
    assert s.max_body_bytes == 2048
    assert (s.function_timeout_s, s.hold_margin_s, s.hold_ttl_s) == (60, 0, 60)
    assert s.secret_backend == "gcp"  # explicit, even on the emulator
    assert s.secrets_file == "/srv/tollgate/secrets.json"
    assert s.safety_salt == "pepper"
    assert s.default_max_output_tokens == 512
    assert s.stream_cap_bytes == 100_000
    assert s.escrow is False
    assert (s.grant_draw_window_s, s.grant_close_margin_s) == (5, 7)
    assert s.usage_api_base_url == "http://127.0.0.1:9/v1"
    assert s.reconcile_drift_percent == 0.5
    assert s.scheduler_audience == "https://r-p.cloudfunctions.net/admin"
    assert s.scheduler_sa == "tollgate-scheduler@p.iam.gserviceaccount.com"
    assert s.oidc_certs_url == "http://127.0.0.1:9/certs"


def test_without_an_argument_the_process_environment_is_read(monkeypatch):
    monkeypatch.setenv("TOLLGATE_GCP_PROJECT", "from-os-environ")
    monkeypatch.setenv("TOLLGATE_MAX_BODY_BYTES", "4096")
    s = Settings.from_env()
    assert (s.gcp_project, s.max_body_bytes) == ("from-os-environ", 4096)


# --------------------------------------------------------------------------- the project


def test_the_project_falls_back_to_googles_variables_in_order():
    both = {"GOOGLE_CLOUD_PROJECT": "g", "GCLOUD_PROJECT": "gc"}
    assert Settings.from_env(both).gcp_project == "g"
    assert Settings.from_env({"GCLOUD_PROJECT": "gc"}).gcp_project == "gc"
    assert Settings.from_env({**both, "TOLLGATE_GCP_PROJECT": " t "}).gcp_project == "t"


@pytest.mark.parametrize(
    "env", [{}, {"TOLLGATE_GCP_PROJECT": "   "}, {"FIRESTORE_EMULATOR_HOST": "localhost:8080"}]
)
def test_no_project_is_an_error_naming_the_variable(env):
    assert "TOLLGATE_GCP_PROJECT" in bad(env)


# --------------------------------------------------------------------------- secret backend


def test_secret_backend_is_local_on_the_emulator_and_gcp_elsewhere():
    assert load(FIRESTORE_EMULATOR_HOST="localhost:8080").secret_backend == "local"
    assert load().secret_backend == "gcp"
    assert load(TOLLGATE_SECRET_BACKEND="local").secret_backend == "local"


def test_an_unknown_secret_backend_is_refused():
    msg = bad({**BASE, "TOLLGATE_SECRET_BACKEND": "vault"})
    assert "TOLLGATE_SECRET_BACKEND" in msg and "vault" in msg


# --------------------------------------------------------------------------- bad numbers


@pytest.mark.parametrize("name", sorted(INT_VARS))
@pytest.mark.parametrize("value", ["ten", "1.5", "1e3", "0x10"])
def test_an_integer_variable_that_is_not_an_integer_is_an_error_naming_it(name, value):
    msg = bad({**BASE, name: value})
    assert name in msg and value in msg and "integer" in msg


@pytest.mark.parametrize(("name", "minimum"), sorted(INT_VARS.items()))
def test_an_integer_variable_below_its_minimum_is_an_error_naming_it(name, minimum):
    assert getattr(load(**{name: str(minimum)}), _field(name)) == minimum
    msg = bad({**BASE, name: str(minimum - 1)})
    assert name in msg and f">= {minimum}" in msg


@pytest.mark.parametrize("name", FLOAT_VARS)
@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan", "inf", "-inf"])
def test_a_number_variable_must_be_a_positive_finite_number(name, value):
    # a NaN or infinite timeout is accepted by urllib3 but refused by the socket at the
    # first call: every call would fail with a 502 instead of the deploy failing here
    msg = bad({**BASE, name: value})
    assert name in msg


@pytest.mark.parametrize("name", FLOAT_VARS)
def test_a_number_variable_takes_decimals(name):
    assert getattr(load(**{name: "0.25"}), _field(name)) == 0.25


def _field(name: str) -> str:
    return {
        "TOLLGATE_MAX_BODY_BYTES": "max_body_bytes",
        "TOLLGATE_FUNCTION_TIMEOUT_S": "function_timeout_s",
        "TOLLGATE_HOLD_MARGIN_S": "hold_margin_s",
        "TOLLGATE_DEFAULT_MAX_OUTPUT_TOKENS": "default_max_output_tokens",
        "TOLLGATE_STREAM_CAP_BYTES": "stream_cap_bytes",
        "TOLLGATE_GRANT_DRAW_WINDOW_S": "grant_draw_window_s",
        "TOLLGATE_GRANT_CLOSE_MARGIN_S": "grant_close_margin_s",
        "TOLLGATE_UPSTREAM_CONNECT_TIMEOUT_S": "upstream_connect_timeout_s",
        "TOLLGATE_UPSTREAM_TIMEOUT_S": "upstream_timeout_s",
        "TOLLGATE_RECONCILE_DRIFT_PERCENT": "reconcile_drift_percent",
    }[name]


# --------------------------------------------------------------------------- escrow switch


@pytest.mark.parametrize("value", ["off", "OFF", " off ", "0", "false", "False", "no"])
def test_escrow_can_be_turned_off(value):
    assert load(TOLLGATE_ESCROW=value).escrow is False


@pytest.mark.parametrize("value", ["on", "ON", "1", "true", "yes", "", " "])
def test_escrow_is_on_by_default_and_when_asked(value):
    assert load(TOLLGATE_ESCROW=value).escrow is True


@pytest.mark.parametrize("value", ["of", "flase", "disabled", "2", "nein"])
def test_a_misspelt_escrow_switch_is_an_error_not_silently_on(value):
    msg = bad({**BASE, "TOLLGATE_ESCROW": value})
    assert "TOLLGATE_ESCROW" in msg and value in msg


# --------------------------------------------------------------------------- README table


class _Spy(Mapping[str, str]):
    """An environment that records every name asked for."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self.values[key]

    def get(self, key, default=None):  # type: ignore[override]
        self.asked.add(key)
        return self.values.get(key, default)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return key in self.values

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("from_env must ask for its variables by name")

    def __len__(self) -> int:
        return len(self.values)


def variables_read() -> set[str]:
    # the last fallback project so that all three project variables are asked for
    spy = _Spy({"GCLOUD_PROJECT": "p"})
    Settings.from_env(spy)
    from_source = set(re.findall(r"\"([A-Z][A-Z0-9_]{3,})\"", inspect.getsource(Settings.from_env)))
    return spy.asked | from_source


def readme_variables() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)", first_cell))
    return names


def test_the_spy_sees_the_variables_read():
    asked = variables_read()
    assert {
        "TOLLGATE_GCP_PROJECT",
        "GOOGLE_CLOUD_PROJECT",
        "GCLOUD_PROJECT",
        "FIRESTORE_EMULATOR_HOST",
        "TOLLGATE_ESCROW",
        *INT_VARS,
        *FLOAT_VARS,
    } <= asked


def test_the_readme_configuration_table_lists_every_variable_from_env_reads():
    documented = readme_variables()
    assert len(documented) > 20  # the table was found
    assert sorted(variables_read() - documented) == []
