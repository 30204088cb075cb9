"""The tuf settings section: a signing server in production needs a real online-key
passphrase; the refresh interval must leave time to re-sign before the timestamp expires."""

from __future__ import annotations

import pytest

from fleet_protocol.config_files import InvalidConfigError, load_config
from fleet_server.security import generate_token
from fleet_server.settings import ENV_PREFIX, ServerSettings
from tests.fleet_server.test_settings import PROD_ENV

KEY_FILE = {ENV_PREFIX + "TUF__ONLINE_KEY_FILE": "/run/secrets/tuf-online.pem"}
PASSPHRASE = ENV_PREFIX + "TUF__ONLINE_KEY_PASSPHRASE"


def test_production_refuses_the_development_online_key_passphrase() -> None:
    with pytest.raises(InvalidConfigError, match=r"tuf\.online_key_passphrase still has its dev"):
        load_config(ServerSettings, None, env={**PROD_ENV, **KEY_FILE}, env_prefix=ENV_PREFIX)


def test_production_refuses_a_weak_online_key_passphrase_without_echoing_it() -> None:
    env = {**PROD_ENV, **KEY_FILE, PASSPHRASE: "short-one"}
    with pytest.raises(InvalidConfigError) as caught:
        load_config(ServerSettings, None, env=env, env_prefix=ENV_PREFIX)
    assert "tuf.online_key_passphrase is shorter than 32 characters" in str(caught.value)
    assert "short-one" not in str(caught.value)


def test_production_takes_a_strong_passphrase_and_a_server_without_the_key_needs_none() -> None:
    env = {**PROD_ENV, **KEY_FILE, PASSPHRASE: generate_token()}
    settings = load_config(ServerSettings, None, env=env, env_prefix=ENV_PREFIX)
    assert settings.tuf.online_key_file is not None
    unsigning = load_config(ServerSettings, None, env=PROD_ENV, env_prefix=ENV_PREFIX)
    assert unsigning.tuf.online_key_file is None


def test_a_refresh_interval_of_a_third_of_the_timestamp_lifetime_is_refused() -> None:
    env = {
        ENV_PREFIX + "TUF__TIMESTAMP_EXPIRY_S": "3600",
        ENV_PREFIX + "TUF__REFRESH_INTERVAL_S": "1200",
    }
    with pytest.raises(InvalidConfigError, match="under a third of timestamp_expiry_s"):
        load_config(ServerSettings, None, env=env, env_prefix=ENV_PREFIX)
