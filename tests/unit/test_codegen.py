"""The checked-in generated code matches protos/ (regenerate with `make protos`)."""

from node.wire import codegen


def test_generated_code_is_up_to_date() -> None:
    stale = codegen.stale_files(codegen.generate())
    assert stale == [], f"stale generated code, run `make protos`: {stale}"


def test_a_changed_proto_would_be_detected(tmp_path, monkeypatch) -> None:
    files = codegen.generate()
    files["crossroads/v1/envelope_pb2.py"] += "# drift\n"
    assert "crossroads/v1/envelope_pb2.py" in codegen.stale_files(files)
