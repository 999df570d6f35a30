"""Every message survives encode → decode unchanged, as text and as a binary frame."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine_sim.strategies import MESSAGES
from iii_trio import protocol as p


def test_every_message_type_has_a_strategy() -> None:
    assert set(MESSAGES) == set(p.MESSAGE_TYPES)


@pytest.mark.parametrize("message_type", sorted(p.MESSAGE_TYPES))
@given(data=st.data())
def test_round_trip(message_type: str, data: st.DataObject) -> None:
    message: Any = data.draw(MESSAGES[message_type])
    frame = p.encode(message)

    assert p.decode(frame) == message
    assert p.decode(frame.encode("utf-8")) == message
    # Encoding is a function of the message: the decoded copy writes the same bytes.
    assert p.encode(p.decode(frame)) == frame
    # The message's own fields are written in declaration order, as serde does.
    written = list(json.loads(frame))
    assert written == [name for name in type(message).model_fields if name in written]
    assert json.loads(frame)["type"] == message_type
