"""The iii wire protocol: message models and the frame codec.

Both ``iii_trio`` and ``engine_sim`` speak through this module, so there is one
definition of every frame. ``encode`` writes a message exactly as the engine
does; ``decode`` reads text or binary frames and raises ``ProtocolError`` (or
its subclass ``UnknownMessageType``, which readers skip) for anything else.
"""

from ._exceptions import FrameTooLarge, ProtocolError, UnknownMessageType
from ._protocol import _base, _codec, _constants, _messages, _observe, _observe_types, _types
from ._protocol._base import *  # noqa: F403
from ._protocol._codec import *  # noqa: F403
from ._protocol._constants import *  # noqa: F403
from ._protocol._messages import *  # noqa: F403
from ._protocol._observe import *  # noqa: F403
from ._protocol._observe_types import *  # noqa: F403
from ._protocol._types import *  # noqa: F403

__all__ = [
    "FrameTooLarge",
    "ProtocolError",
    "UnknownMessageType",
    *_base.__all__,
    *_codec.__all__,
    *_constants.__all__,
    *_messages.__all__,
    *_observe.__all__,
    *_observe_types.__all__,
    *_types.__all__,
]
