"""The application commands as an operator runs them: ``python -m node.cli send|inbox|consult|
answer|status|node status`` as subprocesses against a real hub and nodes (real processes,
certificates, SQLite files). Every outcome has its documented exit code, ``--json`` prints
one JSON object per result line, and nothing prints a Python traceback."""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from node.core.directory import Authorization, Integration, Period, Service
from node.testing import DEMO_SERVICE, ProcessNetwork, default_directory
from tests.conftest import A, B, check_json_lines

pytestmark = pytest.mark.slow
CITIZEN = "85073003328"
CONSULTED = "income.status"
#: The demo directory, and a consultation A may ask about CITIZEN (A and B hold an
#: integration of CITIZEN: the question goes to B).
SEED = [*default_directory((A, B)),
        Service(CONSULTED, 1, "consultation", "citizen", "fan_out", integration_required=True),
        *[Authorization(f"consult-{e}", CONSULTED, e) for e in (A, B)],
        *[Integration(CITIZEN, e, 1, phase=1, period=Period(date(2020, 1, 1))) for e in (A, B)]]


class Ran:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code, self.out, self.err = proc.returncode, proc.stdout, proc.stderr
        assert "Traceback" not in self.err + self.out, self.err

    @property
    def records(self) -> list[dict[str, object]]:
        """The JSON lines printed (each line one object, in the documented style)."""
        return check_json_lines(self.out)


def cli(*args: str, timeout: float = 60) -> Ran:
    return Ran(subprocess.run([sys.executable, "-P", "-m", "node.cli", *args],
                              capture_output=True, text=True, timeout=timeout))


def send(api: str, *extra: str) -> Ran:
    return cli("send", "--local-api", api, "--service", DEMO_SERVICE, "--to", B,
               "--subject-citizen", CITIZEN, "--json", *extra)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessNetwork]:
    with ProcessNetwork(tmp_path_factory.mktemp("cli") / "net", institutions=(A, B),
                        seed=SEED) as net:
        net.start()
        yield net


def test_send_inbox_status_with_json_and_exit_codes(net: ProcessNetwork) -> None:
    api_a, api_b = net.local_api(A), net.local_api(B)
    sent = send(api_a, "--payload", "hello", "--wait")
    assert sent.code == 0, sent.err
    (record,) = sent.records
    assert record["reason"] == "ACCEPTED" and record["hub_ticket"] and record["sequence"]
    assert record["sender_ticket"]  # generated, to retry with

    refused = send(api_a, "--to", "0000000000")  # not an institution of the directory
    assert refused.code == 1, refused.err
    assert [r["reason"] for r in refused.records] != ["ACCEPTED"]

    usage = send(api_a, "--ticket", "t", "--count", "2")
    assert usage.code == 2 and "--ticket" in usage.err

    inbox = cli("inbox", "--local-api", api_b, "--json", "--wait-ms", "10000", "--ack")
    assert inbox.code == 0, inbox.err
    (got,) = inbox.records
    assert base64.b64decode(str(got["payload"])) == b"hello"  # bytes: base64
    assert got["sender_ticket"] == record["sender_ticket"]

    for command in (["status"], ["node", "status"]):
        status = cli(*command, "--local-api", api_a, "--json")
        assert status.code == 0, status.err
        (counters,) = status.records
        assert counters["institution"] == A and int(str(counters["sent_accepted"])) >= 1

    text = cli("status", "--local-api", api_a)  # without --json: readable lines
    assert text.code == 0 and f"institution: {A}" in text.out


def test_consult_refused_is_a_negative_answer(net: ProcessNetwork) -> None:
    asked = cli("consult", "--local-api", net.local_api(A), "--service", DEMO_SERVICE,
                "--subject-citizen", CITIZEN, "--json")
    assert asked.code == 1, asked.err  # demo.message is no consultation: refused
    (answer,) = asked.records
    assert answer["status"] == "REFUSED"


def test_answer_and_consult_with_json(net: ProcessNetwork) -> None:
    provider = subprocess.Popen(
        [sys.executable, "-P", "-m", "node.cli", "answer", "--local-api", net.local_api(B),
         "--data", "yes", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:  # until the provider's stream is attached at B
            asked = cli("consult", "--local-api", net.local_api(A), "--service", CONSULTED,
                        "--subject-citizen", CITIZEN, "--capacity", "1", "--deadline-ms",
                        "2000", "--json")
            if asked.code != 3 or time.monotonic() > deadline:
                break
            assert asked.records[0]["status"] == "INCOMPLETE_DATA"  # exit 3: try again
        assert asked.code == 0, asked.out + asked.err
        (answer,) = asked.records
        assert answer["status"] == "DATA_FOUND"
        assert [p["institution"] for p in answer["parts"]] == [B]
    finally:
        provider.send_signal(signal.SIGINT)
        out, err = provider.communicate(timeout=30)
    assert provider.returncode == 0 and "Traceback" not in err, err
    answered = check_json_lines(out)
    assert answered[-1]["hub_ticket"] == answer["hub_ticket"]
    assert answered[-1]["status"] == "SOURCE_DATA" and answered[-1]["sender"] == A


@pytest.mark.parametrize("command", [
    ["send", "--service", DEMO_SERVICE, "--to", B],
    ["inbox"], ["consult", "--service", DEMO_SERVICE], ["answer"], ["status"],
    ["node", "status"],
])
def test_a_missing_socket_is_reported_at_once_naming_it(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "no-node.sock"
    ran = cli(*command, "--local-api", f"unix:{path}", "--json", timeout=20)
    assert ran.code == 3
    assert str(path) in ran.err and ran.out == ""


def test_nobody_listening_on_a_port_is_unavailable(net: ProcessNetwork) -> None:
    import socket

    with socket.socket() as s:  # a port that is bound but not listening: refused
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
        ran = cli("status", "--local-api", address, timeout=20)
    assert ran.code == 3 and address in ran.err


def test_pending_send_exits_5_and_a_retry_with_the_ticket_sends_once(net: ProcessNetwork) -> None:
    """The hub is down: ``send --wait`` ends with PENDING (exit 5) and says which ticket to
    retry with; the retry with that ticket, once the hub is back, is the same envelope."""
    api_a = net.local_api(A)
    net.stop("hub")
    try:
        first = send(api_a, "--payload", "retried", "--wait", "--wait-ms", "300",
                     "--ticket", "order-42")
        assert first.code == 5, first.err
        assert "--ticket order-42" in first.err
        (pending,) = first.records
        assert pending["reason"] == "PENDING"
    finally:
        net.start_hub()
    again = send(api_a, "--payload", "retried", "--wait", "--ticket", "order-42")
    assert again.code == 0, again.err
    (done,) = again.records
    assert done["sequence"] == pending["sequence"] and done["reason"] == "ACCEPTED"

    inbox = cli("inbox", "--local-api", net.local_api(B), "--json", "--wait-ms", "10000",
                "--ack")
    tickets = [r["sender_ticket"] for r in inbox.records]
    late = cli("inbox", "--local-api", net.local_api(B), "--json", "--wait-ms", "500")
    tickets += [r["sender_ticket"] for r in late.records]
    assert tickets.count("order-42") == 1
