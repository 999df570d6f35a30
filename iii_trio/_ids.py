"""Ids a peer can see: unpredictable unless a replay asks for a seeded stream."""

from __future__ import annotations

import random
from uuid import UUID, uuid4

__all__ = ["new_uuid"]


def new_uuid(rng: random.Random | None) -> UUID:
    """``uuid4()`` (122 bits from ``os.urandom``), or, with ``rng``, a version-4 UUID
    drawn from it, so a seeded run repeats id for id.

    A ``random.Random`` stream is recoverable from a few hundred of its outputs, so a
    peer that sees seeded ids can predict the next ones: seed only replays.
    """
    if rng is None:
        return uuid4()
    return UUID(int=rng.getrandbits(128), version=4)
