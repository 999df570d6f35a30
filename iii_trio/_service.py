"""``worker.register_service``: a named group of functions for the engine's dashboard.

A service is bookkeeping only: it changes nothing about how functions are called.
The engine keeps it while the connection that declared it is up, so the worker
re-declares its services on every connection, after its trigger types and before its
functions (the order the official SDKs replayed them in while they had
``register_service``; 0.25 dropped the method but the engine still reads the
``registerservice`` message).

As the official Python SDK sent it, ``name`` defaults to ``id``. The engine has no
message to withdraw a service, so ``unregister()`` stops re-declaring it on later
connections (the engine forgets it when this connection ends).
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping

from ._protocol._codec import encode
from ._protocol._messages import Message, RegisterService
from ._registry import Registration

__all__ = ["register_service"]


def _name(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-blank str or None: {value!r}")
    return value


def register_service(
    services: MutableMapping[str, RegisterService],
    send: Callable[[Message], None],
    id: str,
    *,
    name: str | None = None,
    description: str | None = None,
    parent_service_id: str | None = None,
) -> Registration:
    """Declare service ``id`` (kept in ``services`` for replay, sent with ``send``).

    Declaring an id again replaces it (a new description, a new parent) and sends it
    again; the earlier handle's ``unregister()`` then does nothing.
    """
    if not isinstance(id, str) or not id.strip():
        raise ValueError(f"service id must be a non-blank str: {id!r}")
    name = _name(name, "name")
    parent_service_id = _name(parent_service_id, "parent_service_id")
    if parent_service_id == id:
        raise ValueError(f"service {id!r} cannot be its own parent")
    if description is not None and not isinstance(description, str):
        raise ValueError(f"description must be a str or None: {description!r}")
    message = RegisterService(
        id=id, name=name or id, description=description, parent_service_id=parent_service_id
    )
    encode(message)  # a bad value fails here, not at the next connection
    services[id] = message
    send(message)

    def remove() -> None:
        if services.get(id) is message:
            del services[id]

    return Registration("service", id, remove)
