"""Observers (iii 0.25's ``observe``): who watches which function, their states, and
the activations of their targets. ``ObserveEngine`` is the engine core's one handle on
them; ``ObserveLimits`` bounds them (``EngineConfig.observe``)."""

from ._delivery import ENGINE_CALLER_NAME, CallObserve
from ._engine import OBSERVE_FRAMES, ObserveEngine
from ._limits import (
    ENGINE_FEATURES,
    FEATURE_LARGE_MESSAGES,
    FEATURE_LOCAL_DISPATCH,
    FEATURE_OBSERVE,
    ObserveLimits,
)
from ._observer import ObservedCall, Observer

__all__ = [
    "ENGINE_CALLER_NAME",
    "ENGINE_FEATURES",
    "FEATURE_LARGE_MESSAGES",
    "FEATURE_LOCAL_DISPATCH",
    "FEATURE_OBSERVE",
    "OBSERVE_FRAMES",
    "CallObserve",
    "ObserveEngine",
    "ObserveLimits",
    "ObservedCall",
    "Observer",
]
