"""Names and codes the protocol fixes (docs/internals/protocol.md)."""

from __future__ import annotations

from typing import Final

__all__ = [
    "DEFAULT_NAMESPACE",
    "FUNCTION_NAMESPACE_CONFLICT",
    "INVALID_NAMESPACE",
    "WORKER_NAMESPACE_CONFLICT",
    "is_blank_namespace",
]

#: Where functions, workers and triggers live when nothing else is said.
DEFAULT_NAMESPACE: Final = "default"

#: ``registrationrejected`` code: another worker of the namespace owns that function id.
FUNCTION_NAMESPACE_CONFLICT: Final = "FUNCTION_NAMESPACE_CONFLICT"
#: ``registrationrejected`` code (then the connection closes): a live worker of the
#: namespace already has that worker name.
WORKER_NAMESPACE_CONFLICT: Final = "WORKER_NAMESPACE_CONFLICT"

#: A namespace field that is present but blank; never read as "absent".
INVALID_NAMESPACE: Final = "INVALID_NAMESPACE"


def is_blank_namespace(namespace: str | None) -> bool:
    """A namespace that was given but holds only whitespace (refused, not defaulted)."""
    return namespace is not None and not namespace.strip()
