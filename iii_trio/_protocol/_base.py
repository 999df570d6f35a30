"""The base of every wire model: frozen, strict, tolerant of unknown keys, and
serialised with the engine's rule for absent optional fields."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Final, get_args, get_origin
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    JsonValue,
    SkipValidation,
    Strict,
    model_serializer,
)
from pydantic_core import core_schema

from . import _json

__all__ = ["OMITTED", "WRITE_NULL", "Json", "Omitted", "Uuid", "WireModel"]

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


class Omitted:
    """The type of ``OMITTED``: a field whose key is not in the frame at all."""

    _instance: ClassVar[Omitted | None] = None

    def __new__(cls) -> Omitted:
        # One instance, so ``is OMITTED`` holds after copying or unpickling a model.
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "OMITTED"

    def __reduce__(self) -> str:
        return "OMITTED"

    def __bool__(self) -> bool:
        return False

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.is_instance_schema(cls)


#: The value of a field whose key is absent, where ``null`` is a value of its own
#: (``invocationsobserved`` items: ``"output": null`` is a handler that returned
#: ``None``; no ``output`` key is an output nobody captured). Never written.
OMITTED: Final = Omitted()


#: Field marker: the engine writes this optional field as ``null`` when it has no
#: value, instead of leaving the key out (a serde ``Option`` without
#: ``skip_serializing_if``).
WRITE_NULL: Final = _WriteNull()


def _is_model_list(annotation: Any) -> bool:
    # ``list[SomeModel]``: written item by item, each as its model writes itself.
    if get_origin(annotation) is not list:
        return False
    (item,) = get_args(annotation)
    return isinstance(item, type) and issubclass(item, WireModel)


class WireModel(BaseModel):
    """An object on the wire.

    Optional fields (default ``None``) are left out when they are ``None`` unless
    marked ``WRITE_NULL``; required fields are always written, ``null`` included.
    On input an absent key and ``null`` both mean "no value" (except for a field
    whose default is ``OMITTED``, where ``null`` is a value). Types are checked
    strictly (a number is not a string), and unknown keys are ignored so newer
    peers can add fields.
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    __omitted_when_none__: ClassVar[frozenset[str]] = frozenset()
    #: Per field, in declaration order: its name, its key as JSON text with the colon,
    #: whether it is left out when ``None``, and whether it holds a list of models.
    #: Built once per class for the encoder.
    __wire_fields__: ClassVar[tuple[tuple[str, str, bool, bool], ...]] = ()

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
            (
                name,
                _json.write_string(name) + ":",
                name in cls.__omitted_when_none__,
                _is_model_list(field.annotation),
            )
            for name, field in cls.model_fields.items()
        )

    def _present(self) -> Iterator[tuple[str, Any]]:
        # The omission rule as ``_json_text`` applies it; fields in declaration order.
        values = self.__dict__
        for name, _key, omitted, _models in self.__wire_fields__:
            value = values[name]
            if (value is None and omitted) or value is OMITTED:
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
        for name, key, omitted, models in self.__wire_fields__:
            value = values[name]
            if value is None:
                if not omitted:
                    parts.append(key + "null")
            elif type(value) is str:
                parts.append(key + _json.write_string(value))
            elif type(value) in _JSON_CONTAINERS:
                # Before the isinstance tests: the one against a model (an ABC) is
                # the slowest test here, and payloads are the common case after str.
                if models:
                    text = ",".join(item._json_text() for item in value)
                    parts.append(f"{key}[{text}]")
                else:
                    parts.append(key + _json.write(value))
            elif isinstance(value, UUID):
                parts.append(f'{key}"{value}"')
            elif isinstance(value, WireModel):
                parts.append(key + value._json_text())
            elif value is not OMITTED:
                parts.append(key + _json.write(value))
        return "{" + ",".join(parts) + "}"

    def to_wire(self) -> dict[str, Any]:
        """The same object as ``to_json`` writes, as Python values (UUIDs as strings)."""
        wire: dict[str, Any] = {}
        models = {name for name, _key, _omitted, is_list in self.__wire_fields__ if is_list}
        for name, value in self._present():
            if name in models:
                value = [item.to_wire() for item in value]
            elif isinstance(value, WireModel):
                value = value.to_wire()
            elif isinstance(value, UUID):
                value = str(value)
            wire[name] = value
        return wire

    @model_serializer(mode="plain")
    def _serialize(self) -> dict[str, Any]:
        # model_dump() follows the same omission rule as the wire.
        return self.to_wire()
