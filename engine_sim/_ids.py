"""Where the engine's ids come from: the OS's randomness, or a seed for replays."""

from __future__ import annotations

import random

from iii_trio._ids import new_uuid

__all__ = ["IdSource"]


class IdSource:
    """Makes worker ids, reattach tokens, invocation ids, binding ids and receipts.

    Without a seed every id is ``uuid.uuid4()`` (122 bits from ``os.urandom``), so
    no number of observed ids tells a peer the next worker's id or, worse, its
    reattach token (which would let it reattach as that worker and take its name
    and functions). A ``random.Random`` stream is recoverable from a few hundred
    ids, so the seeded generator is used only when a seed is given explicitly:
    chaos runs need the same seed to give the same run, id for id.
    """

    def __init__(self, seed: int | None) -> None:
        self._rng = None if seed is None else random.Random(seed)

    def new_id(self) -> str:
        return str(new_uuid(self._rng))
