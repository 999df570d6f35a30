"""Bad frames raise ProtocolError (never anything else) with a message that says why."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine_sim.strategies import json_objects, json_values, malformed_frames
from iii_trio import protocol as p

TEN_MB = 10 * 1024 * 1024


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "not valid JSON"),
        ("", "empty"),
        ("   \n", "empty"),
        ("[1, 2]", "JSON array, not an object"),
        ('"text"', "JSON string, not an object"),
        ("null", "JSON null, not an object"),
        ('{"id": "f"}', "no 'type' field"),
        ('{"type": 7}', "'type' is a JSON number"),
        ('{"type":"unregisterfunction"}', "missing field 'id'"),
        ('{"type":"invocationresult","function_id":"f"}', "missing field 'invocation_id'"),
        ('{"type":"unregisterfunction","id":5}', "field 'id': Input should be a valid string"),
        ('{"type":"unregisterfunction","id":null}', "field 'id'"),
        ('{"type":"invokefunction","function_id":"f","data":1,"invocation_id":"x"}', "UUID"),
        ('{"type":"invokefunction","function_id":"f","data":1,"action":{"type":"x"}}', "action"),
        ('{"type":"registerservice","id":"s","name":true}', "field 'name'"),
        ('{"type":"invocationresult","invocation_id":NaN}', "NaN is not a JSON value"),
        ('{"type":"ping"', "not valid JSON"),
        ("[" * 100_000, "nested too deeply"),
    ],
)
def test_bad_frame_is_explained(frame: str, reason: str) -> None:
    with pytest.raises(p.ProtocolError) as caught:
        p.decode(frame)
    assert reason in str(caught.value)
    assert type(caught.value) is p.ProtocolError


def test_unknown_type_is_distinguishable_and_named() -> None:
    with pytest.raises(p.UnknownMessageType) as caught:
        p.decode('{"type":"frobnicate","x":1}')
    assert caught.value.message_type == "frobnicate"
    assert isinstance(caught.value, p.ProtocolError)
    # A reader that skips it keeps going with the next frame.
    assert p.decode('{"type":"ping"}') == p.Ping()


def test_types_newer_than_0_25_are_unknown_not_errors_of_another_kind() -> None:
    # A later SDK's message towards this engine: skipped, like any unknown type.
    with pytest.raises(p.UnknownMessageType):
        p.decode('{"type":"observebatch","id":"webhook"}')


def test_unknown_fields_are_ignored() -> None:
    frame = '{"type":"workerregistered","worker_id":"w","capabilities":["x"],"x":{}}'
    assert p.decode(frame) == p.WorkerRegistered(worker_id="w")


def test_binary_frame_must_be_utf8() -> None:
    with pytest.raises(p.ProtocolError, match="not UTF-8"):
        p.decode(b'{"type":"ping","x":"\xff"}')


def test_binary_json_frame_is_accepted() -> None:
    assert p.decode(b'{"type":"ping"}') == p.Ping()


def test_ten_megabytes_of_garbage_gives_a_short_message() -> None:
    with pytest.raises(p.ProtocolError) as caught:
        p.decode("x" * TEN_MB)
    assert "not valid JSON" in str(caught.value)
    assert len(str(caught.value)) < 200


def test_ten_megabyte_string_in_a_mistyped_field_is_not_echoed() -> None:
    frame = json.dumps({"type": "unregisterfunction", "id": ["y" * TEN_MB]})
    with pytest.raises(p.ProtocolError) as caught:
        p.decode(frame)
    assert "field 'id'" in str(caught.value)
    assert len(str(caught.value)) < 200


def test_ten_megabyte_payload_within_the_limit_decodes() -> None:
    blob = "z" * TEN_MB
    message = p.decode(json.dumps({"type": "invokefunction", "function_id": "f", "data": blob}))
    assert isinstance(message, p.InvokeFunction)
    assert message.data == blob


@pytest.mark.parametrize("as_bytes", [False, True], ids=["text", "binary"])
def test_frame_over_the_limit_is_refused_before_parsing(as_bytes: bool) -> None:
    text = '{"type":"ping","pad":"' + "é" * TEN_MB + '"}'
    frame: str | bytes = text.encode() if as_bytes else text
    with pytest.raises(p.FrameTooLarge) as caught:
        p.decode(frame, max_size=1024 * 1024)
    assert caught.value.limit == 1024 * 1024
    assert caught.value.size == len(text.encode())
    assert "exceeds the 1048576-byte limit" in str(caught.value)


def test_default_limit_is_the_engines_64_mib() -> None:
    assert p.MAX_MESSAGE_BYTES == 64 * 1024 * 1024


@given(st.text() | st.binary())
def test_arbitrary_input_is_a_message_or_a_protocol_error(frame: str | bytes) -> None:
    try:
        message = p.decode(frame)
    except p.ProtocolError:
        return
    assert message.type in p.MESSAGE_TYPES


@given(
    message_type=st.sampled_from(sorted(p.MESSAGE_TYPES)),
    fields=json_objects,
    drop=st.sampled_from([None, "id", "function_id", "invocation_id", "data", "config"]),
)
def test_objects_with_a_known_type_and_random_fields(
    message_type: str, fields: dict[str, object], drop: str | None
) -> None:
    frame = {**fields, "type": message_type}
    if drop is not None:
        frame.pop(drop, None)
    error = ""
    try:
        assert p.decode(json.dumps(frame)).type == message_type
    except p.ProtocolError as exc:
        error = str(exc)
    # A refusal names the message type it was reading.
    assert not error or repr(message_type) in error


@given(json_values.filter(lambda value: not isinstance(value, dict)))
def test_non_object_json_is_refused(value: object) -> None:
    with pytest.raises(p.ProtocolError, match="not an object"):
        p.decode(json.dumps(value))


def test_telemetry_frames_are_recognised() -> None:
    assert p.is_telemetry_frame(b"MTRC{}")
    assert p.is_telemetry_frame(b"OTLP{}")
    assert p.is_telemetry_frame(b"LOGS{}")
    assert not p.is_telemetry_frame(b'{"type":"ping"}')


@given(malformed_frames)
def test_every_shipped_malformed_frame_is_refused_with_a_reason(frame: str) -> None:
    # The strategy users get from engine_sim.strategies must only produce frames
    # the protocol layer refuses, never one it accepts or crashes on.
    with pytest.raises(p.ProtocolError) as refused:
        p.decode(frame)
    assert str(refused.value)
