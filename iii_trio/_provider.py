"""The trigger-provider side: bindings the engine hands this worker's trigger types.

The engine sends ``registertrigger`` / ``unregistertrigger`` for a trigger type this
worker provides; ``Providers`` runs the provider's hook (taking a handler slot, as an
invocation does) and answers a registration with ``triggerregistrationresult``. It
also hears the engine's refusals of this worker's own bindings, and stops every
binding when a connection ends (``release``).
"""

from __future__ import annotations

import logging

import trio

from ._live import Live
from ._options import InitOptions
from ._outbox import Outgoing
from ._protocol._codec import encode
from ._protocol._messages import RegisterTrigger, TriggerRegistrationResult, UnregisterTrigger
from ._protocol._types import ErrorBody
from ._registry import Registry, TriggerConfig, TriggerTypeRegistration

__all__ = ["Providers"]

log = logging.getLogger("iii_trio")


class Providers:
    """Runs the engine's binding requests through this worker's trigger-type providers."""

    def __init__(
        self, name: str, options: InitOptions, registry: Registry, slots: trio.CapacityLimiter
    ) -> None:
        self.name = name
        self.options = options
        self._registry = registry
        self._slots = slots

    async def on_binding(self, live: Live, message: RegisterTrigger | UnregisterTrigger) -> None:
        """The engine asks a provider of this worker to start or stop a binding."""
        registration = self._registry.trigger_types.get(message.trigger_type or "")
        if registration is None:
            return  # as the official SDK: a type we do not provide gets no answer
        slot = object()
        await self._slots.acquire_on_behalf_of(slot)
        assert live.nursery is not None
        live.nursery.start_soon(self._run_provider, live, registration, message, slot)

    async def _run_provider(
        self,
        live: Live,
        registration: TriggerTypeRegistration,
        message: RegisterTrigger | UnregisterTrigger,
        slot: object,
    ) -> None:
        try:
            if isinstance(message, UnregisterTrigger):
                trigger = registration.bindings.pop(message.id, None) or TriggerConfig(
                    id=message.id, trigger_type=registration.message.id, function_id="", config=None
                )
                try:
                    await registration.provider.unregister_trigger(trigger)
                except Exception:
                    log.exception("worker %s: unregister hook failed for %s", self.name, message.id)
                return
            trigger = TriggerConfig(
                id=message.id,
                trigger_type=message.trigger_type,
                function_id=message.function_id,
                config=message.config,
                metadata=message.metadata,
                namespace=message.namespace,
            )
            error: ErrorBody | None = None
            try:
                await registration.provider.register_trigger(trigger)
                registration.bindings[trigger.id] = trigger
            except Exception as exc:
                log.warning("worker %s: refused trigger %s: %s", self.name, message.id, exc)
                error = ErrorBody(code="trigger_registration_failed", message=str(exc))
            reply = TriggerRegistrationResult(
                id=message.id,
                trigger_type=message.trigger_type,
                function_id=message.function_id,
                error=error,
            )
            await live.outbox.put(Outgoing(encode(reply)))
        finally:
            self._slots.release_on_behalf_of(slot)

    def on_binding_result(self, message: TriggerRegistrationResult) -> None:
        """The engine forwarded a provider's answer to one of this worker's bindings."""
        registration = self._registry.triggers.get(message.id)
        if message.error is None or registration is None:
            return
        registration.error = message.error
        log.error(
            "worker %s: trigger %s (%s) refused: %s: %s",
            self.name,
            message.id,
            message.trigger_type,
            message.error.code,
            message.error.message,
        )

    async def release(self) -> None:
        """Stop what providers run for a connection that ended.

        The engine forgets a provider's bindings with its connection and sends them
        again to the next one, so a provider must not go on firing them meanwhile
        (offline, its fires would pile up and go out late). Hooks get the drain
        timeout, as handlers do on shutdown.
        """
        with trio.move_on_after(self.options.drain_timeout_ms / 1000):
            for registration in list(self._registry.trigger_types.values()):
                while registration.bindings:
                    _, trigger = registration.bindings.popitem()
                    try:
                        await registration.provider.unregister_trigger(trigger)
                    except Exception:
                        log.exception(
                            "worker %s: unregister hook failed for %s", self.name, trigger.id
                        )
