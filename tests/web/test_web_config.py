"""The web keys of the config: where it may listen, and when it needs a password."""

from __future__ import annotations

import pytest

from openscan_pi.config import load_config
from openscan_pi.errors import ConfigError


def load(web: dict[str, object]):  # type: ignore[no-untyped-def]
    return load_config(None, env={}, overrides={"web": web})


def test_the_defaults_listen_on_loopback_without_a_password() -> None:
    web = load({}).web
    assert (web.enabled, web.listen, web.password) == (True, "127.0.0.1:8080", None)


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", "localhost:80", "[::1]:8080",
                                    "127.8.9.1:0"])
def test_loopback_needs_no_password(listen: str) -> None:
    assert load({"listen": listen}).web.listen == listen


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "[::]:8080", "192.168.1.20:8080",
                                    "scanner.local:8080"])
def test_anything_else_needs_a_password(listen: str) -> None:
    with pytest.raises(ConfigError) as err:
        load({"listen": listen})
    assert str(err.value).startswith("config: web.listen:") and "web.password" in str(err.value)
    assert ConfigError.exit_code == 78
    assert load({"listen": listen, "password": "s3cret"}).web.password == "s3cret"
    assert load({"listen": listen, "enabled": False}).web.enabled is False


@pytest.mark.parametrize("listen", ["8080", "127.0.0.1", ":8080", "127.0.0.1:99999",
                                    "127.0.0.1:http", "a b:80", "http://127.0.0.1:8080"])
def test_a_listen_that_is_not_host_port_is_named(listen: str) -> None:
    with pytest.raises(ConfigError, match=r"^config: web.listen: .*HOST:PORT"):
        load({"listen": listen})


def test_an_empty_password_is_refused() -> None:
    with pytest.raises(ConfigError, match="web.password: is empty"):
        load({"password": ""})
