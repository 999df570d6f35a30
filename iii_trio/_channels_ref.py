"""``StreamChannelRef``: one end of a data channel, as it travels inside payloads.

A ref is the JSON object ``{"channel_id", "access_key", "direction"}`` the engine's
``engine::channels::create`` returns (``direction`` is ``"read"`` or ``"write"``); the
official SDKs put it in payloads as that object and recognise it on arrival by its
shape. Here it is a read-only ``dict`` subclass, so a ref can be put anywhere in a
payload (a plain ``dict`` payload included) and is encoded as the object it is, at no
cost to payloads that hold none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, NoReturn
from urllib.parse import quote

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

__all__ = ["CHANNEL_PATH", "Direction", "StreamChannelRef", "channel_url", "is_channel_ref"]

#: Where the engine serves channel sockets on its worker port.
CHANNEL_PATH: Final = "/ws/channels/"

Direction = Literal["read", "write"]

_KEYS: Final = frozenset(("channel_id", "access_key", "direction"))


def is_channel_ref(value: object) -> bool:
    """Whether ``value`` has a channel ref's shape: a mapping whose ``channel_id`` and
    ``access_key`` are strings and whose ``direction`` is ``"read"`` or ``"write"`` (the
    test the official SDKs apply; other keys are allowed, as there)."""
    return (
        isinstance(value, Mapping)
        and isinstance(value.get("channel_id"), str)
        and isinstance(value.get("access_key"), str)
        and value.get("direction") in ("read", "write")
    )


class StreamChannelRef(dict[str, str]):
    """One end of a data channel: ``channel_id``, ``access_key`` (the secret that lets
    a socket open that end) and ``direction``. Put it in a payload as it is; it is
    encoded as the JSON object the engine and the official SDKs use.

    Read-only: a ref names a channel end for good."""

    __slots__ = ()

    def __init__(self, channel_id: str, access_key: str, direction: Direction) -> None:
        if direction not in ("read", "write"):
            raise ValueError(f"direction must be 'read' or 'write', not {direction!r}")
        super().__init__(channel_id=channel_id, access_key=access_key, direction=direction)

    @classmethod
    def of(cls, value: object) -> StreamChannelRef:
        """``value`` (a ref, any mapping of a ref's shape, or a channel end, which is
        one) as a plain ``StreamChannelRef``; ``ValueError`` for anything else."""
        if type(value) is StreamChannelRef:
            return value
        if not is_channel_ref(value):
            raise ValueError(
                "not a channel ref: expected {'channel_id': str, 'access_key': str, "
                f"'direction': 'read' | 'write'}}, got {value!r:.200}"
            )
        assert isinstance(value, Mapping)
        return cls(value["channel_id"], value["access_key"], value["direction"])

    @property
    def channel_id(self) -> str:
        """The channel's id."""
        return self["channel_id"]

    @property
    def access_key(self) -> str:
        """The secret a socket must show to open this end."""
        return self["access_key"]

    @property
    def direction(self) -> Direction:
        """``"read"`` for the reading end, ``"write"`` for the writing end."""
        return "read" if self["direction"] == "read" else "write"

    def __repr__(self) -> str:
        # The access key is a secret: kept out of logs and tracebacks.
        return f"StreamChannelRef(channel_id={self.channel_id!r}, direction={self.direction!r})"

    def _read_only(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("a StreamChannelRef is read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _read_only
    __ior__ = _read_only

    # Read-only, so a copy is the ref itself; pickled, it is rebuilt from its fields (the
    # default dict protocol would set items one by one, which a read-only dict refuses).
    def __copy__(self) -> StreamChannelRef:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> StreamChannelRef:
        return self

    def __reduce__(self) -> tuple[type[StreamChannelRef], tuple[str, str, str]]:
        return StreamChannelRef, (self.channel_id, self.access_key, self.direction)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """In a pydantic model: validated from the JSON object, dumped as it."""
        fields = core_schema.typed_dict_schema(
            {
                "channel_id": core_schema.typed_dict_field(core_schema.str_schema()),
                "access_key": core_schema.typed_dict_field(core_schema.str_schema()),
                "direction": core_schema.typed_dict_field(
                    core_schema.literal_schema(["read", "write"])
                ),
            }
        )
        from_fields = core_schema.no_info_after_validator_function(cls.of, fields)
        return core_schema.json_or_python_schema(
            json_schema=from_fields,
            python_schema=core_schema.no_info_plain_validator_function(cls.of),
            serialization=core_schema.plain_serializer_function_ser_schema(dict),
        )


def channel_url(engine_url: str, ref: StreamChannelRef) -> str:
    """The socket URL of ``ref``'s end on the engine at ``engine_url``: ``/ws/channels/{id}`` after
    the URL's own path; a query already on the URL is kept, ``key`` and ``dir`` follow
    it (as the official SDKs build it)."""
    base, _, query = engine_url.partition("?")
    own = f"key={quote(ref.access_key, safe='')}&dir={ref.direction}"
    full_query = f"{query}&{own}" if query else own
    return f"{base.rstrip('/')}{CHANNEL_PATH}{quote(ref.channel_id, safe='')}?{full_query}"
