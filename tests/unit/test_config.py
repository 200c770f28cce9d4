"""Config validation names the offending key."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import ConfigError, hub_config, node_config

BASE = Path("/etc/crossroads")


def hub_table(**extra: object) -> dict[str, object]:
    table: dict[str, object] = {
        "network": "demo", "listen": "0.0.0.0:7443", "data_dir": "/var/lib/crossroads/hub",
        "tls": {"ca_cert": "tls/ca.crt", "cert": "tls/hub.crt", "key": "tls/hub.key"},
        "directory_key": "keys/directory.key",
    }
    table.update(extra)
    return table


def test_valid_hub_config_resolves_relative_paths() -> None:
    cfg = hub_config(hub_table(), BASE)
    assert cfg.tls.cert == BASE / "tls" / "hub.crt"
    assert cfg.limits.max_payload_bytes == 4 * 1024 * 1024
    assert cfg.limits.consultations_in_flight == 200
    assert hub_config(hub_table(limits={"consultations_in_flight": 8}),
                      BASE).limits.consultations_in_flight == 8
    assert cfg.directory_key_path == BASE / "keys" / "directory.key"
    without = {k: v for k, v in hub_table().items() if k != "directory_key"}
    default = Path("/var/lib/crossroads/hub/directory-signing.key")
    assert hub_config(without, BASE).directory_key_path == default


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"network": "Demo!"}, "network"),
        ({"listen": "nowhere"}, "listen"),
        ({"limits": {"max_payload_bytes": 0}}, "limits.max_payload_bytes"),
        ({"limits": {"consultations_in_flight": 0}}, "limits.consultations_in_flight"),
        ({"limits": {"max_payload_bytes": 10_000, "max_batch_bytes": 5_000}}, "max_batch_bytes"),
        ({"surprise": 1}, "unknown setting surprise"),
        ({"tls": {"ca_cert": "a", "cert": "b"}}, "tls.key is required"),
        ({"synchronous": "OFF"}, "synchronous"),
    ],
)
def test_bad_hub_config_is_refused_with_the_key(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        hub_config(hub_table(**changes), BASE)


def test_node_config_requires_a_valid_enterprise_number() -> None:
    table = {"network": "demo", "enterprise_number": "0403019216", "listen": "0.0.0.0:7444",
             "hub": "hub:7443", "local_api": "unix:/run/crossroads/node.sock",
             "data_dir": "/var/lib/crossroads/node", "hub_directory_key": "hub-directory.pub",
             "tls": {"ca_cert": "ca.crt", "cert": "n.crt", "key": "n.key"}}
    with pytest.raises(ConfigError, match="enterprise_number '0403019216' is not a valid.*mod-97"):
        node_config(table, BASE)
    table["enterprise_number"] = "0403019261"
    assert node_config(table, BASE).hub == "hub:7443"


NODE_TABLE: dict[str, object] = {
    "network": "demo", "enterprise_number": "0403019261", "listen": "0.0.0.0:7444",
    "hub": "hub:7443", "local_api": "unix:/run/crossroads/node.sock",
    "data_dir": "/var/lib/crossroads/node", "hub_directory_key": "hub-directory.pub",
    "tls": {"ca_cert": "ca.crt", "cert": "n.crt", "key": "n.key"}}


def test_emit_employment_mutations_is_a_boolean_off_by_default() -> None:
    table = dict(NODE_TABLE)
    assert node_config(table, BASE).emit_employment_mutations is False
    assert node_config({**table, "emit_employment_mutations": True}, BASE).emit_employment_mutations
    with pytest.raises(ConfigError, match="emit_employment_mutations must be true or false"):
        node_config({**table, "emit_employment_mutations": "yes"}, BASE)


def test_retention_days_defaults_to_30_and_0_keeps_everything() -> None:
    table = dict(NODE_TABLE)
    assert node_config(table, BASE).retention_days == 30
    assert node_config({**table, "retention_days": 0}, BASE).retention_days == 0
    with pytest.raises(ConfigError, match="retention_days must be an integer >= 0"):
        node_config({**table, "retention_days": -1}, BASE)
    with pytest.raises(ConfigError, match="retention_days must be an integer >= 0"):
        node_config({**table, "retention_days": 7.5}, BASE)


def test_metrics_listen_is_an_optional_tcp_address() -> None:
    assert node_config(dict(NODE_TABLE), BASE).metrics_listen is None
    table = {**NODE_TABLE, "metrics_listen": "127.0.0.1:9465"}
    assert node_config(table, BASE).metrics_listen == "127.0.0.1:9465"
    with pytest.raises(ConfigError, match="metrics_listen 'unix:/run/m.sock' must be host:port"):
        node_config({**NODE_TABLE, "metrics_listen": "unix:/run/m.sock"}, BASE)
    with pytest.raises(ConfigError, match="metrics_listen 'nine' must be host:port"):
        node_config({**NODE_TABLE, "metrics_listen": "nine"}, BASE)


def test_max_receivers_defaults_to_1000_and_is_range_checked() -> None:
    assert hub_config(hub_table(), BASE).limits.max_receivers == 1_000
    assert hub_config(hub_table(limits={"max_receivers": 5}), BASE).limits.max_receivers == 5
    with pytest.raises(ConfigError, match="limits.max_receivers must be an integer >= 1"):
        hub_config(hub_table(limits={"max_receivers": 0}), BASE)
