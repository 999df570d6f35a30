"""The iii wire protocol: message models and the frame codec.

Both ``iii_trio`` and ``engine_sim`` speak through this module, so there is one
definition of every frame. ``encode`` writes a message exactly as the engine
does; ``decode`` reads text or binary frames and raises ``ProtocolError`` (or
its subclass ``UnknownMessageType``, which readers skip) for anything else.
"""

from ._exceptions import FrameTooLarge, ProtocolError, UnknownMessageType
from ._protocol import *  # noqa: F403
from ._protocol import __all__ as _models

__all__ = ["FrameTooLarge", "ProtocolError", "UnknownMessageType", *_models]
