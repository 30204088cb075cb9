"""Production refuses weak secrets (short, low in entropy) and plaintext MQTT, naming the field."""

from __future__ import annotations

import pytest

from fleet_protocol.config_files import InvalidConfigError, load_config
from fleet_server.security import generate_token
from fleet_server.settings import ENV_PREFIX, ServerSettings
from tests.fleet_server.test_settings import PROD_ENV, SECRETS


def _refusal(**changes: str) -> str:
    env = {**PROD_ENV, **{ENV_PREFIX + name: value for name, value in changes.items()}}
    with pytest.raises(InvalidConfigError) as caught:
        load_config(ServerSettings, None, env=env, env_prefix=ENV_PREFIX)
    return str(caught.value)


def _field(variable: str) -> str:
    return variable.removeprefix(ENV_PREFIX).lower().replace("__", ".")


@pytest.mark.parametrize("variable", list(SECRETS))
@pytest.mark.parametrize(
    ("weak", "problem"),
    [
        ("Xk3-9fQz", "is shorter than 32 characters"),
        ("rsf_" + "a" * 40, "has too little entropy"),
        ("password1234" * 3, "has too little entropy"),
    ],
    ids=["short", "one repeated character", "a repeated word"],
)
def test_production_refuses_a_short_or_low_entropy_secret_naming_it(
    variable: str, weak: str, problem: str
) -> None:
    message = _refusal(**{variable.removeprefix(ENV_PREFIX): weak})
    assert f"{_field(variable)} {problem}" in message
    assert "secrets.token_urlsafe(32)" in message  # how to make a good one
    assert weak not in message


@pytest.mark.parametrize("variable", ["BROKER__URL", "ENROLMENT__BROKER_PUBLIC_URL"])
def test_production_refuses_plaintext_mqtt_naming_the_url(variable: str) -> None:
    message = _refusal(**{variable: "mqtt://broker.fleet.example:1883"})
    assert f"{_field(variable)} is plaintext mqtt://; production needs mqtts://" in message


def test_production_accepts_generated_tokens_and_tls_brokers() -> None:
    env = {
        **PROD_ENV,
        **{name: generate_token() for name in SECRETS},
    }
    settings = load_config(ServerSettings, None, env=env, env_prefix=ENV_PREFIX)
    assert settings.broker.url.startswith("mqtts://")


def test_development_mode_takes_short_secrets_and_plaintext_mqtt() -> None:
    env = {
        ENV_PREFIX + "AUTH__BOOTSTRAP_ADMIN_TOKEN": "rsf_t",
        ENV_PREFIX + "BROKER__URL": "mqtt://x",
    }
    settings = load_config(ServerSettings, None, env=env, env_prefix=ENV_PREFIX)
    assert settings.mode == "development"


def test_production_refuses_an_open_tuf_repository_naming_the_field() -> None:
    message = _refusal(TUF__DEVICE_AUTH="none")
    assert "tuf.device_auth is none" in message
    env = {**PROD_ENV, **{name: generate_token() for name in SECRETS}}
    assert load_config(ServerSettings, None, env=env, env_prefix=ENV_PREFIX).tuf.device_auth == (
        "broker_password"  # the default needs no setting
    )
