"""Config validation names the offending key."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import ConfigError, StoreBackend, hub_config, node_config

BASE = Path("/etc/crossroads")


def hub_table(**extra: object) -> dict[str, object]:
    table: dict[str, object] = {
        "network": "demo", "listen": "0.0.0.0:7443", "data_dir": "/var/lib/crossroads/hub",
        "tls": {"ca_cert": "tls/ca.crt", "cert": "tls/hub.crt", "key": "tls/hub.key",
                "crl": "tls/crl.pem"},
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
    assert node_config(table, BASE).hubs == ("hub:7443",)


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


def test_keepalive_defaults_to_30_s_and_10_s_and_refuses_sub_second_values() -> None:
    cfg = hub_config(hub_table(), BASE)
    assert (cfg.keepalive.time_ms, cfg.keepalive.timeout_ms) == (30_000, 10_000)
    short = hub_config(hub_table(keepalive={"time_ms": 2_000, "timeout_ms": 1_000}), BASE)
    assert (short.keepalive.time_ms, short.keepalive.timeout_ms) == (2_000, 1_000)
    for key in ("time_ms", "timeout_ms"):
        with pytest.raises(ConfigError, match=f"keepalive.{key} must be an integer >= 1000"):
            hub_config(hub_table(keepalive={key: 500}), BASE)
    with pytest.raises(ConfigError, match="unknown setting keepalive.interval"):
        hub_config(hub_table(keepalive={"interval": 5}), BASE)
NODE = {"network": "demo", "enterprise_number": "0403019261", "listen": "127.0.0.1:0",
        "hub": "hub:7443", "local_api": "unix:/run/crossroads/node.sock",
        "data_dir": "/var/lib/crossroads/node", "hub_directory_key": "hub-directory.pub",
        "tls": {"ca_cert": "ca.crt", "cert": "n.crt", "key": "n.key"}}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("listen", "127.0.0.1:70000", "listen '127.0.0.1:70000': port 70000 is out of range; use 0-65535"),
        ("hub", "hub:70000", "hub 'hub:70000': port 70000 is out of range; use 1-65535"),
        ("hub", "hub:0", "hub 'hub:0': port 0 is out of range; use 1-65535"),
        ("metrics_listen", "127.0.0.1:99999", "metrics_listen '127.0.0.1:99999'"),
    ],
)
def test_ports_are_range_checked(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        node_config({**NODE, key: value}, BASE)
    assert err.value.problems == (message,) or message in err.value.problems[0]
    assert node_config({**NODE, "listen": "127.0.0.1:0"}, BASE).listen == "127.0.0.1:0"


def test_every_problem_is_reported_at_once() -> None:
    table = {**NODE, "listen": "127.0.0.1:70000", "surprise": 1, "retention_days": -1,
             "tls": {"ca_cert": "ca.crt", "cert": "n.crt"}}
    with pytest.raises(ConfigError) as err:
        node_config(table, BASE)
    problems = err.value.problems
    assert len(problems) == 4, problems
    assert [p.split(" ")[0] for p in problems] == [
        "listen", "tls.key", "retention_days", "unknown"]
    assert "surprise" in problems[3]


def test_hub_revocation_is_off_only_when_the_config_says_so() -> None:
    tls = {"ca_cert": "tls/ca.crt", "cert": "tls/hub.crt", "key": "tls/hub.key"}
    with pytest.raises(ConfigError, match='tls.crl is required.*tls.revocation = "off"'):
        hub_config(hub_table(tls=tls), BASE)
    cfg = hub_config(hub_table(tls={**tls, "revocation": "off"}), BASE)
    assert cfg.tls.revocation == "off" and cfg.tls.crl is None
    with pytest.raises(ConfigError, match="contradicts tls.crl"):
        hub_config(hub_table(tls={**tls, "revocation": "off", "crl": "c.pem"}), BASE)
    assert hub_config(hub_table(), BASE).tls.crl_stale == "refuse"
    with pytest.raises(ConfigError, match="tls.crl_stale must be one of refuse, warn"):
        hub_config(hub_table(tls={**tls, "crl": "c.pem", "crl_stale": "ignore"}), BASE)


def test_max_receivers_defaults_to_1000_and_is_range_checked() -> None:
    assert hub_config(hub_table(), BASE).limits.max_receivers == 1_000
    assert hub_config(hub_table(limits={"max_receivers": 5}), BASE).limits.max_receivers == 5
    with pytest.raises(ConfigError, match="limits.max_receivers must be an integer >= 1"):
        hub_config(hub_table(limits={"max_receivers": 0}), BASE)


def test_ack_timeout_defaults_to_60_s_on_both_daemons_and_is_range_checked() -> None:
    assert hub_config(hub_table(), BASE).timeouts.ack_s == 60.0
    assert node_config(NODE, BASE).timeouts.ack_s == 60.0
    assert hub_config(hub_table(timeouts={"ack_s": 0.5}), BASE).timeouts.ack_s == 0.5
    assert node_config({**NODE, "timeouts": {"ack_s": 90}}, BASE).timeouts.ack_s == 90.0
    for bad in (0, -1, "60", True):
        with pytest.raises(ConfigError, match="timeouts.ack_s must be a number of seconds >= 0.1"):
            node_config({**NODE, "timeouts": {"ack_s": bad}}, BASE)
    with pytest.raises(ConfigError, match="unknown setting timeouts.ack_ms"):
        hub_config(hub_table(timeouts={"ack_ms": 5}), BASE)


def test_audit_checkpoints_default_to_10000_records_or_60_s_and_are_range_checked() -> None:
    policy = hub_config(hub_table(), BASE).audit_checkpoints
    assert (policy.every_records, policy.every_s, policy.idle_every_s) == (10_000, 60.0, 60.0)
    policy = hub_config(hub_table(audit_checkpoints={"every_records": 5, "every_s": 0,
                                                     "idle_every_s": 2.5}), BASE).audit_checkpoints
    assert (policy.every_records, policy.every_s, policy.idle_every_s) == (5, 0.0, 2.5)
    for key, value, message in (("every_records", 0, "an integer >= 1"),
                                ("every_s", -1, "a number of seconds >= 0"),
                                ("idle_every_s", 0.5, "a number of seconds >= 1")):
        with pytest.raises(ConfigError, match=f"audit_checkpoints.{key} must be {message}"):
            hub_config(hub_table(audit_checkpoints={key: value}), BASE)
    with pytest.raises(ConfigError, match="unknown setting audit_checkpoints"):
        node_config({**NODE, "audit_checkpoints": {"every_s": 1}}, BASE)  # the hub's only


@pytest.mark.parametrize(("key", "default"), [("submit_batch_envelopes", 1_000),
                                              ("submit_batch_bytes", 8 * 1024 * 1024),
                                              ("stream_calls_in_flight", 10_000)])
def test_batch_and_stream_limits_default_to_the_documented_values(key: str, default: int) -> None:
    assert getattr(node_config(NODE, BASE).limits, key) == default
    assert getattr(node_config({**NODE, "limits": {key: 7}}, BASE).limits, key) == 7
    with pytest.raises(ConfigError, match=f"limits.{key} must be an integer >= 1"):
        node_config({**NODE, "limits": {key: 0}}, BASE)


def test_hubs_is_a_list_and_the_older_single_hub_key_still_works() -> None:
    single = node_config(NODE, BASE)
    listed = {k: v for k, v in NODE.items() if k != "hub"}
    assert single.hubs == ("hub:7443",)
    assert node_config({**listed, "hubs": ["hub:7443"]}, BASE) == single  # one canonical form
    many = node_config({**listed, "hubs": ["hub-a:7443", "10.0.0.2:7443", "hub-c:7443"]}, BASE)
    assert many.hubs == ("hub-a:7443", "10.0.0.2:7443", "hub-c:7443")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hubs": []}, "hubs must be a non-empty list of host:port"),
        ({"hubs": "hub:7443"}, "hubs must be a non-empty list of host:port"),
        ({"hubs": ["a:7443", "b:7443", "a:7443"]},
         "hubs[2] 'a:7443' is listed twice: remove the duplicate"),
        ({"hubs": ["a:7443", "nowhere"]}, "hubs[1] 'nowhere' must be host:port or unix:/path"),
        ({"hubs": ["a:7443", "b:65536"]},
         "hubs[1] 'b:65536': port 65536 is out of range; use 1-65535"),
        ({"hubs": ["a:0"]}, "hubs[0] 'a:0': port 0 is out of range; use 1-65535"),
        ({"hubs": ["a:7443", 7443]}, "hubs[1] must be a non-empty string"),
        ({"hubs": ["a:7443"], "hub": "a:7443"},
         "hub and hubs both given: keep hubs (a list of host:port), remove hub"),
        ({}, "hubs is required: the hub's addresses"),
        # The same value 100,000 times: one problem, found before reading any entry.
        ({"hubs": ["a:7443"] * 100_000}, "hubs lists 100000 addresses: at most 64"),
    ],
)
def test_bad_hub_lists_are_refused_naming_the_key(changes: dict[str, object],
                                                  message: str) -> None:
    table = {**{k: v for k, v in NODE.items() if k != "hub"}, **changes}
    with pytest.raises(ConfigError) as err:
        node_config(table, BASE)
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(message), (
        err.value.problems)


def test_the_store_defaults_to_sqlite_and_postgresql_takes_a_dsn_and_a_password_source() -> None:
    assert hub_config(hub_table(), BASE).store.backend is StoreBackend.SQLITE
    store = hub_config(hub_table(store={
        "backend": "postgresql", "dsn": "postgresql://hub@db1,db2/crossroads"
        "?target_session_attrs=read-write", "password_file": "pg/password",
        "pool_max_size": 4}), BASE).store
    assert store.backend is StoreBackend.POSTGRESQL
    assert store.password_file == BASE / "pg" / "password"
    assert (store.pool_min_size, store.pool_max_size) == (2, 4)


@pytest.mark.parametrize(("store", "message"), [
    ({"backend": "postgresql"}, "store.dsn is required"),
    ({"backend": "postgresql", "dsn": "host=db password=secret"}, "store.dsn must not hold a password"),
    ({"backend": "postgresql", "dsn": "postgresql://hub:secret@db/x"}, "store.dsn must not hold"),
    ({"backend": "postgresql", "dsn": "postgresql://db/x?password=s"}, "store.dsn must not hold"),
    ({"backend": "postgresql", "dsn": "host=db", "password_file": "f", "password_env": "V"},
     "password_file and store.password_env both given"),
    ({"dsn": "host=db"}, 'store.dsn applies to backend = "postgresql" only'),
    ({"backend": "mysql"}, "store.backend must be one of sqlite, postgresql"),
    ({"backend": "postgresql", "dsn": "host=db", "pool_min_size": 4, "pool_max_size": 2},
     "store.pool_max_size must be >= pool_min_size"),
    ({"backend": "postgresql", "dsn": "host=db", "pasword_file": "f"}, "unknown setting store.pasword_file"),
    ({"backend": "postgresql", "dsn": "host=db", "replica_id": "hub a"}, "store.replica_id must be"),
    ({"backend": "postgresql", "dsn": "host=db", "replica_id": "h" * 129}, "store.replica_id must be"),
])
def test_bad_store_settings_are_refused_naming_the_key(store: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        hub_config(hub_table(store=store), BASE)


def test_check_config_names_a_missing_unsafe_or_absent_database_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from node.selfcheck import _store_problems

    password = tmp_path / "pg-password"
    store = hub_config(hub_table(store={"backend": "postgresql", "dsn": "host=db",
                                        "password_file": str(password)}), BASE).store
    assert "cannot read" in _store_problems(store)[0]
    password.write_text("secret\n")
    password.chmod(0o604)
    assert "readable by others" in _store_problems(store)[0]
    password.chmod(0o640)
    assert _store_problems(store) == []
    monkeypatch.delenv("CROSSROADS_TEST_PG", raising=False)
    env = hub_config(hub_table(store={"backend": "postgresql", "dsn": "host=db",
                                      "password_env": "CROSSROADS_TEST_PG"}), BASE).store
    assert "CROSSROADS_TEST_PG is not set" in _store_problems(env)[0]
    monkeypatch.setenv("CROSSROADS_TEST_PG", "secret")
    assert _store_problems(env) == []
