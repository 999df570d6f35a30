"""The base of every wire model: frozen, strict, tolerant of unknown keys, and
serialised with the engine's rule for absent optional fields."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Final
from uuid import UUID

from pydantic import BaseModel, ConfigDict, JsonValue, SkipValidation, Strict, model_serializer

from . import _json

__all__ = ["WRITE_NULL", "Json", "Uuid", "WireModel"]

#: Any JSON value (object, array, string, number, boolean or null). Not walked when a
#: model is built: a decoded frame holds what the JSON parser made, which is JSON by
#: construction, and walking a large payload twice doubled the cost of decoding.
#: Anything else put here by hand is refused by ``encode`` with a ProtocolError.
Json = Annotated[JsonValue, SkipValidation]

#: A UUID; on the wire a string, written lowercase and hyphenated. The hyphenated,
#: simple, braced and ``urn:uuid:`` forms are all read, as the engine's uuid crate does.
Uuid = Annotated[UUID, Strict(False)]


_JSON_CONTAINERS: Final = frozenset({dict, list})


class _WriteNull:
    def __repr__(self) -> str:
        return "WRITE_NULL"


#: Field marker: the engine writes this optional field as ``null`` when it has no
#: value, instead of leaving the key out (a serde ``Option`` without
#: ``skip_serializing_if``).
WRITE_NULL: Final = _WriteNull()


class WireModel(BaseModel):
    """An object on the wire.

    Optional fields (default ``None``) are left out when they are ``None`` unless
    marked ``WRITE_NULL``; required fields are always written, ``null`` included.
    On input an absent key and ``null`` both mean "no value". Types are checked
    strictly (a number is not a string), and unknown keys are ignored so newer
    peers can add fields.
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    __omitted_when_none__: ClassVar[frozenset[str]] = frozenset()
    #: Per field, in declaration order: its name, its key as JSON text with the colon,
    #: and whether it is left out when ``None``. Built once per class for the encoder.
    __wire_fields__: ClassVar[tuple[tuple[str, str, bool], ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.__omitted_when_none__ = frozenset(
            name
            for name, field in cls.model_fields.items()
            if not field.is_required()
            and field.default is None
            and not any(meta is WRITE_NULL for meta in field.metadata)
        )
        cls.__wire_fields__ = tuple(
            (name, _json.write_string(name) + ":", name in cls.__omitted_when_none__)
            for name in cls.model_fields
        )

    def _present(self) -> Iterator[tuple[str, Any]]:
        # The omission rule as ``_json_text`` applies it; fields in declaration order.
        values = self.__dict__
        for name, _key, omitted in self.__wire_fields__:
            value = values[name]
            if value is None and omitted:
                continue
            yield name, value

    def to_json(self) -> str:
        """This model as compact JSON text, byte for byte as the engine writes it.

        The model's own fields keep their declaration order (serde writes struct
        fields in order); JSON values inside them get sorted keys (serde_json's
        ``Value`` map is sorted). Raises ProtocolError for a value that is not JSON,
        or that nests deeper than the engine reads (``MAX_DEPTH``, this object
        being the first level).
        """
        text = self._json_text()
        _json.check_depth(text, "cannot encode as JSON")
        return text

    def _json_text(self) -> str:
        # Unchecked for depth: that is a property of the whole text, checked once.
        # Runs for every frame sent, so the omission rule of ``_present`` is applied
        # inline and the common kinds of value are told apart by the cheapest test.
        values = self.__dict__
        parts = []
        for name, key, omitted in self.__wire_fields__:
            value = values[name]
            if value is None:
                if not omitted:
                    parts.append(key + "null")
            elif type(value) is str:
                parts.append(key + _json.write_string(value))
            elif type(value) in _JSON_CONTAINERS:
                # Before the isinstance tests: the one against a model (an ABC) is
                # the slowest test here, and payloads are the common case after str.
                parts.append(key + _json.write(value))
            elif isinstance(value, UUID):
                parts.append(f'{key}"{value}"')
            elif isinstance(value, WireModel):
                parts.append(key + value._json_text())
            else:
                parts.append(key + _json.write(value))
        return "{" + ",".join(parts) + "}"

    def to_wire(self) -> dict[str, Any]:
        """The same object as ``to_json`` writes, as Python values (UUIDs as strings)."""
        wire: dict[str, Any] = {}
        for name, value in self._present():
            if isinstance(value, WireModel):
                value = value.to_wire()
            elif isinstance(value, UUID):
                value = str(value)
            wire[name] = value
        return wire

    @model_serializer(mode="plain")
    def _serialize(self) -> dict[str, Any]:
        # model_dump() follows the same omission rule as the wire.
        return self.to_wire()
