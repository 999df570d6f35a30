"""How the engine core's log lines name ids and namespaces (shared by its parts)."""

from __future__ import annotations

from iii_trio.protocol import DEFAULT_NAMESPACE

__all__ = ["in_namespace", "short"]


def short(identifier: str) -> str:
    """The first 8 characters of a worker or invocation id: enough to tell them apart."""
    return identifier[:8]


def in_namespace(namespace: str) -> str:
    """`` in <namespace>`` for a log line, or nothing for the default namespace."""
    return "" if namespace == DEFAULT_NAMESPACE else f" in {namespace}"
