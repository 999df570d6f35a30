"""Trigger types and their bindings: which provider a binding goes to, and when.

A part of ``EngineCore`` (see ``_core.py``): the registries it works on
(``core.trigger_types``, ``core.bindings``, ``core.trigger_hooks``) stay on the core,
where modules, discovery and the module host read them; this class holds the rules
for keeping them consistent as workers and modules come and go.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import JsonValue

from iii_trio.protocol import (
    DEFAULT_NAMESPACE,
    INVALID_NAMESPACE,
    ErrorBody,
    RegisterTrigger,
    RegisterTriggerType,
    TriggerRegistrationResult,
    UnregisterTrigger,
    UnregisterTriggerType,
    is_blank_namespace,
)

from ._logtext import in_namespace
from ._not_simulated import DOCS, TRIGGER_TYPES, not_simulated_trigger_type
from ._ownership import binding_refusal, trigger_type_refused
from ._records import Binding, NoReply, Reply, TriggerTypeEntry, TypeKey, WorkerRecord
from ._timers import Timer, Timers
from .modules._seam import BuiltinError

if TYPE_CHECKING:
    from ._core import EngineCore

__all__ = ["Triggers"]

log = logging.getLogger("engine_sim")


@dataclass(eq=False)
class _AckWait:
    """An ``engine::register_trigger`` call waiting for its worker provider's verdict."""

    reply: Reply
    function_id: str
    #: Answers the call as accepted when the provider stays silent; cancelled otherwise.
    timer: Timer


class Triggers:
    """Files bindings with their providers, refiles them when providers change, fires them.

    Only the waits for worker providers' verdicts live here; everything else is the
    core's shared state.
    """

    def __init__(self, core: EngineCore) -> None:
        self.core = core
        self._ack_waits: dict[str, _AckWait] = {}
        self._ack_timers = Timers(core.deadline_armed, "a trigger acknowledgement timer")

    # -- entry points the core and the worker manager call --------------------------------

    def fire_trigger_type(self, type_id: str, data: JsonValue, now: float) -> None:
        """Call every live binding of an engine-provided trigger type (fire and forget)."""
        for binding in list(self.core.bindings.values()):
            if binding.live and binding.trigger_type == type_id:
                self.core.calls.invoke(
                    binding.target_namespace,
                    binding.function_id,
                    data,
                    reply=NoReply(),
                    now=now,
                    metadata=binding.metadata,
                )

    def register_binding(self, binding: Binding, reply: Reply | None, now: float) -> None:
        """File a binding with its provider, or park it; ``reply`` hears failures.

        ``reply`` set means a durable ``engine::register_trigger`` call that waits for a
        worker provider's verdict; ``None`` means a ``registertrigger`` frame, whose
        failures go back to the owner as ``triggerregistrationresult``.
        """
        key = self._resolve_provider(binding)
        old = self.core.bindings.get(binding.id)
        if old is not None:
            self._drop_binding(old, tell_provider=old.provider != key)
        refusal = self._module_refusal(key, binding)
        if refusal is not None:
            self._refuse_binding(binding, refusal, reply)
            return
        binding.provider = key
        self.core.bindings[binding.id] = binding
        if key is None:
            log.warning(
                "trigger %s: no provider of %r yet; it waits for one%s",
                binding.id,
                binding.trigger_type,
                _missing_provider(binding.trigger_type),
            )
        elif self.core.trigger_types[key].provider is not None:
            self._deliver_binding(binding)
            if reply is not None:
                deadline = now + self.core.config.trigger_ack_timeout_ms / 1000
                self._pop_ack_wait(binding.id)  # a wait it replaces must not time out this one
                timer = self._ack_timers.call_at(
                    deadline, lambda _when: self._ack_timed_out(binding.id)
                )
                self._ack_waits[binding.id] = _AckWait(reply, "engine::register_trigger", timer)
            return
        else:
            self._module_bound(binding)
        if reply is not None:
            self.core.calls.complete(reply, "engine::register_trigger", {"id": binding.id}, None)

    def unregister_binding(self, binding_id: str) -> bool:
        """Remove a binding (telling its provider); False if there is none."""
        binding = self.core.bindings.get(binding_id)
        if binding is None:
            return False
        self._drop_binding(binding, tell_provider=True)
        return True

    def expire_ack_waits(self, now: float) -> None:
        """Answer the ``engine::register_trigger`` calls whose provider stayed silent."""
        self._ack_timers.run_due(now)

    def next_deadline(self) -> float | None:
        """When ``expire_ack_waits`` next has something to do."""
        return self._ack_timers.next_deadline()

    def worker_left(self, worker: WorkerRecord) -> None:
        """Drop the bindings ``worker`` owned; refile those whose provider it was."""
        for binding in list(self.core.bindings.values()):
            if binding.owner == worker.id:
                self._drop_binding(binding, tell_provider=True)
        for key, provided in list(self.core.trigger_types.items()):
            if provided.provider == worker.id:
                self._withdraw_type(key)

    def _withdraw_type(self, key: TypeKey) -> None:
        """Trigger type ``key`` has no provider any more: its bindings look for another."""
        del self.core.trigger_types[key]
        for binding in self.core.bindings.values():
            if binding.provider == key:
                self._refile(binding)

    # -- frames ------------------------------------------------------------------------------

    def unregister_trigger_type(
        self, worker: WorkerRecord, home: str, message: UnregisterTriggerType
    ) -> None:
        """An ``unregistertriggertype`` frame: ``worker`` stops providing a type. Only its
        provider may withdraw a type; its bindings stay, parked or refiled elsewhere."""
        key = (message.namespace or home, message.id)
        provided = self.core.trigger_types.get(key)
        if provided is None or provided.provider != worker.id:
            log.info(
                "%s withdrew trigger type %s%s, which it does not provide; ignored",
                self.core.who(worker),
                message.id,
                in_namespace(key[0]),
            )
            return
        log.info(
            "%s no longer provides trigger type %s%s",
            self.core.who(worker),
            message.id,
            in_namespace(key[0]),
        )
        self._withdraw_type(key)

    def register_trigger_type(
        self, worker: WorkerRecord, home: str, message: RegisterTriggerType
    ) -> None:
        """A ``registertriggertype`` frame, applied once ``worker``'s namespace is fixed."""
        if is_blank_namespace(message.namespace):
            log.warning(
                "%s: trigger type %s has a blank namespace; refused",
                self.core.who(worker),
                message.id,
            )
            return
        namespace = message.namespace or home
        key = (namespace, message.id)
        if trigger_type_refused(self.core, worker, key):
            return
        self.core.trigger_types[key] = TriggerTypeEntry(
            namespace=namespace,
            id=message.id,
            description=message.description,
            trigger_request_format=message.trigger_request_format,
            call_request_format=message.call_request_format,
            provider=worker.id,
        )
        log.info(
            "%s provides trigger type %s%s",
            self.core.who(worker),
            message.id,
            in_namespace(namespace),
        )
        for binding in list(self.core.bindings.values()):
            if binding.provider == key:
                self._deliver_binding(binding)  # replay to the new provider
            elif binding.provider is None and self._resolve_provider(binding) == key:
                binding.provider = key
                log.info("trigger %s activated by its new provider", binding.id)
                self._deliver_binding(binding)
            elif (
                namespace != DEFAULT_NAMESPACE
                and binding.provider == (DEFAULT_NAMESPACE, message.id)
                and binding.trigger_namespace is None
                and binding.home_namespace == namespace
            ):
                # It had fallen back to the default provider; its home now has one.
                self._tell_provider_unregister(binding)
                self._module_unbound(binding)
                binding.provider = key
                self._deliver_binding(binding)

    def register_trigger(
        self, worker: WorkerRecord, home: str, message: RegisterTrigger, now: float
    ) -> None:
        """A ``registertrigger`` frame, applied once ``worker``'s namespace is fixed."""
        blank = next(
            (
                field
                for field, value in (
                    ("namespace", message.namespace),
                    ("trigger_namespace", message.trigger_namespace),
                )
                if is_blank_namespace(value)
            ),
            None,
        )
        error = (
            ErrorBody(code=INVALID_NAMESPACE, message=f"{blank} must not be blank")
            if blank
            else binding_refusal(self.core, worker, message.id)
        )
        if error is not None:
            self._send_trigger_error(worker.id, message, error)
            return
        binding = Binding(
            id=message.id,
            trigger_type=message.trigger_type,
            function_id=message.function_id,
            config=message.config,
            metadata=message.metadata,
            namespace=message.namespace,
            trigger_namespace=message.trigger_namespace,
            home_namespace=home,
            owner=worker.id,
        )
        log.info(
            "%s registered trigger %s (%s → %s)",
            self.core.who(worker),
            binding.id,
            binding.trigger_type,
            binding.function_id,
        )
        self.register_binding(binding, None, now)

    def on_verdict(self, worker: WorkerRecord, message: TriggerRegistrationResult) -> None:
        """A worker provider accepted or refused a binding it was given."""
        binding = self.core.bindings.get(message.id)
        if binding is None or binding.provider is None:
            return
        provider = self.core.trigger_types.get(binding.provider)
        if provider is None or provider.provider != worker.id:
            log.debug(
                "%s reported on trigger %s it does not provide; ignored",
                self.core.who(worker),
                message.id,
            )
            return
        wait = self._pop_ack_wait(message.id)
        if message.error is None:
            if wait is not None:
                self.core.calls.complete(wait.reply, wait.function_id, {"id": binding.id}, None)
            return
        log.warning(
            "trigger %s refused by its provider: %s: %s",
            binding.id,
            message.error.code,
            message.error.message,
        )
        binding.provider = None  # parked until a provider registers the type again
        if wait is not None:
            self._refuse_binding(binding, message.error, wait.reply)
        elif binding.owner in self.core.workers:
            self.core.send(binding.owner, message)

    # -- internals ---------------------------------------------------------------------------

    def _ack_timed_out(self, binding_id: str) -> None:
        wait = self._ack_waits.pop(binding_id, None)
        if wait is not None:
            # No verdict in time counts as acceptance.
            self.core.calls.complete(wait.reply, wait.function_id, {"id": binding_id}, None)

    def _pop_ack_wait(self, binding_id: str) -> _AckWait | None:
        wait = self._ack_waits.pop(binding_id, None)
        if wait is not None:
            wait.timer.cancel()
        return wait

    def _resolve_provider(self, binding: Binding) -> TypeKey | None:
        if binding.trigger_namespace is not None:
            key = (binding.trigger_namespace, binding.trigger_type)
            return key if key in self.core.trigger_types else None
        for namespace in (binding.home_namespace, DEFAULT_NAMESPACE):
            if (namespace, binding.trigger_type) in self.core.trigger_types:
                return (namespace, binding.trigger_type)
        return None

    def _module_refusal(self, key: TypeKey | None, binding: Binding) -> ErrorBody | None:
        """Why the module providing ``key`` refuses ``binding``'s config, if it does."""
        hooks = self.core.trigger_hooks.get(key) if key is not None else None
        if hooks is None or hooks.check is None:
            return None
        try:
            hooks.check(binding.config)
        except BuiltinError as exc:
            return exc.body
        except Exception:
            # A module's bug refuses that binding only, never stops the engine.
            log.exception("trigger %s: its module failed to check its config", binding.id)
            return ErrorBody(code="internal_error", message=f"{binding.trigger_type} check failed")
        return None

    def _refile(self, binding: Binding) -> None:
        """Give ``binding`` to the provider it resolves to now that its own left.

        A module only takes what its ``check`` accepts: a config the worker provider
        took may not suit the module the binding falls back to. A refused one is
        parked (its owner told) until a provider of its type comes back.
        """
        key = self._resolve_provider(binding)
        refusal = self._module_refusal(key, binding)
        if refusal is not None:
            log.warning(
                "trigger %s: its provider left and %s refuses its config (%s: %s); "
                "it waits for another provider",
                binding.id,
                binding.trigger_type,
                refusal.code,
                refusal.message,
            )
            key = None
            if binding.owner in self.core.workers:
                self._send_trigger_error(
                    binding.owner,
                    binding,
                    ErrorBody(code="trigger_registration_failed", message=refusal.message),
                )
        binding.provider = key
        if key is not None:
            self._deliver_binding(binding)

    def _deliver_binding(self, binding: Binding) -> None:
        assert binding.provider is not None
        provider = self.core.trigger_types[binding.provider].provider
        if provider is None:
            self._module_bound(binding)
            return
        self.core.send(
            provider,
            RegisterTrigger(
                id=binding.id,
                trigger_type=binding.trigger_type,
                function_id=binding.function_id,
                config=binding.config,
                metadata=binding.metadata,
                namespace=_unless_default(binding.namespace),
                trigger_namespace=_unless_default(binding.provider[0]),
            ),
        )

    def _tell_provider_unregister(self, binding: Binding) -> None:
        if binding.provider is None:
            return
        entry = self.core.trigger_types.get(binding.provider)
        if entry is not None and entry.provider is not None:
            self.core.send(
                entry.provider, UnregisterTrigger(id=binding.id, trigger_type=binding.trigger_type)
            )

    def _module_bound(self, binding: Binding) -> None:
        """Tell the module providing ``binding``'s trigger type that it is live."""
        hooks = self.core.trigger_hooks.get(binding.provider) if binding.provider else None
        if hooks is not None and hooks.on_bind is not None:
            try:
                hooks.on_bind(binding)
            except Exception:
                log.exception("trigger %s: its module failed to take it", binding.id)

    def _module_unbound(self, binding: Binding) -> None:
        hooks = self.core.trigger_hooks.get(binding.provider) if binding.provider else None
        if hooks is not None and hooks.on_unbind is not None:
            try:
                hooks.on_unbind(binding)
            except Exception:
                log.exception("trigger %s: its module failed to let it go", binding.id)

    def _drop_binding(self, binding: Binding, *, tell_provider: bool) -> None:
        if tell_provider:
            self._tell_provider_unregister(binding)
        if self.core.bindings.get(binding.id) is binding:
            self._module_unbound(binding)
        self.core.bindings.pop(binding.id, None)
        wait = self._pop_ack_wait(binding.id)
        if wait is not None:
            # Removed before its provider answered: the registration itself happened.
            self.core.calls.complete(wait.reply, wait.function_id, {"id": binding.id}, None)

    def _refuse_binding(self, binding: Binding, error: ErrorBody, reply: Reply | None) -> None:
        self.core.bindings.pop(binding.id, None)
        if reply is not None:
            self.core.calls.complete(
                reply,
                "engine::register_trigger",
                None,
                ErrorBody(
                    code="trigger_registration_failed", message=f"{error.code}: {error.message}"
                ),
            )
            return
        if binding.owner in self.core.workers:
            self._send_trigger_error(
                binding.owner,
                binding,
                ErrorBody(code="trigger_registration_failed", message=error.message),
            )

    def _send_trigger_error(
        self, worker_id: str, trigger: Binding | RegisterTrigger, error: ErrorBody
    ) -> None:
        """Tell ``worker_id`` that its trigger was refused."""
        self.core.send(
            worker_id,
            TriggerRegistrationResult(
                id=trigger.id,
                trigger_type=trigger.trigger_type,
                function_id=trigger.function_id,
                error=error,
            ),
        )


def _missing_provider(trigger_type: str) -> str:
    """What to do when ``trigger_type`` is an upstream built-in's and nobody provides it:
    a parked binding of a type engine_sim never provides would wait silently forever."""
    missing = not_simulated_trigger_type(trigger_type)
    if missing is not None:
        return f" (upstream's {missing} provides it; engine_sim does not simulate it: see {DOCS})"
    module = TRIGGER_TYPES.get(trigger_type)
    if module is not None:
        return f" (the {module} module provides it: switch it on in the engine's modules)"
    return ""


def _unless_default(namespace: str | None) -> str | None:
    return None if namespace in (None, DEFAULT_NAMESPACE) else namespace
