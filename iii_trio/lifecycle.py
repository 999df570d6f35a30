"""Worker lifecycles as data: the SDK's states and the engine's worker status.

See ``iii_trio._lifecycle`` for how the tables and the machine fit together.
"""

from ._exceptions import IllegalTransition
from ._lifecycle import *  # noqa: F403
from ._lifecycle import __all__ as _lifecycle_names

__all__ = ["IllegalTransition", *_lifecycle_names]
