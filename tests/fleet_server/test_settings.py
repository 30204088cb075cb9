"""Server settings: development runs on defaults, production refuses public secrets and SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fleet_protocol.config_files import InvalidConfigError, load_config
from fleet_server.cli import main
from fleet_server.settings import ENV_PREFIX, ServerSettings, development_secrets_in_use

# Production secrets must be long and random (tests/fleet_server/test_production_settings.py).
SECRETS = {
    "ROADSIGN_FLEET__BROKER__PASSWORD": "b-9f2c1e8Zq4XvT0mLwR7kYhN3sJdP6aGuE5",
    "ROADSIGN_FLEET__AUTH__SECRET_KEY": "k-77aa10QpW2zRt8VbN4mXcL6yJh9KdF3sGe",
    "ROADSIGN_FLEET__AUTH__BOOTSTRAP_ADMIN_TOKEN": "rsf_t-31bd04Hq7LmZx2WcV9nB5kTy8RfJ4p",
}
PROD_ENV = {
    "ROADSIGN_FLEET__MODE": "production",
    "ROADSIGN_FLEET__DATABASE__URL": "postgresql+psycopg://fleet@127.0.0.1:5432/fleet",
    "ROADSIGN_FLEET__BROKER__URL": "mqtts://broker.fleet.example:8883",
    "ROADSIGN_FLEET__ENROLMENT__BROKER_PUBLIC_URL": "mqtts://broker.fleet.example:8883",
    **SECRETS,
}


def test_development_mode_starts_on_defaults() -> None:
    settings = load_config(ServerSettings, None)
    assert settings.mode == "development"
    assert len(development_secrets_in_use(settings)) == 3


def test_production_with_real_secrets_from_env_is_accepted() -> None:
    settings = load_config(ServerSettings, None, env=PROD_ENV, env_prefix=ENV_PREFIX)
    assert settings.mode == "production"
    assert development_secrets_in_use(settings) == []


@pytest.mark.parametrize("left_default", [k for k in PROD_ENV if "PASSWORD" in k or "AUTH" in k])
def test_production_refuses_any_development_secret(left_default: str) -> None:
    env = {k: v for k, v in PROD_ENV.items() if k != left_default}
    field = left_default.removeprefix(ENV_PREFIX).lower().replace("__", ".")
    with pytest.raises(InvalidConfigError, match=f"{field} still has its development default"):
        load_config(ServerSettings, None, env=env, env_prefix=ENV_PREFIX)


def test_production_refuses_sqlite() -> None:
    env = {k: v for k, v in PROD_ENV.items() if "DATABASE" not in k}
    with pytest.raises(InvalidConfigError, match="production runs on PostgreSQL"):
        load_config(ServerSettings, None, env=env, env_prefix=ENV_PREFIX)


def test_secrets_never_appear_in_errors_or_reprs() -> None:
    env = {**PROD_ENV, "ROADSIGN_FLEET__HTTP__PORT": "0"}
    with pytest.raises(InvalidConfigError) as caught:
        load_config(ServerSettings, None, env=env, env_prefix=ENV_PREFIX)
    settings = load_config(ServerSettings, None, env=PROD_ENV, env_prefix=ENV_PREFIX)
    for secret in SECRETS.values():
        assert secret not in str(caught.value)
        assert secret not in repr(settings)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("database:\n  url: mysql://x\n", "database.url"),
        ("broker:\n  url: http://x\n", "broker.url"),
        ("broker:\n  share_group: a/b\n", "broker.share_group"),
        ("http:\n  prot: 80\n", "http.prot"),
        ("rollouts:\n  tick_s: 0\n", "rollouts.tick_s"),
        ("rollouts:\n  tick: 5\n", "rollouts.tick"),
    ],
)
def test_validate_config_names_the_bad_field(
    tmp_path: Path, text: str, field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "server.yaml"
    path.write_text(text)
    assert main(["validate-config", str(path)]) == 1
    assert f"{path}:2: {field}:" in capsys.readouterr().out


def test_the_rollout_driver_is_refused_without_an_online_key_to_sign_with() -> None:
    with pytest.raises(ValidationError, match=r"rollouts\.enabled needs tuf\.online_key_file"):
        ServerSettings.model_validate({"rollouts": {"enabled": True}})
    settings = ServerSettings.model_validate(
        {"rollouts": {"enabled": True}, "tuf": {"online_key_file": "/keys/online.pem"}}
    )
    assert settings.rollouts.enabled
