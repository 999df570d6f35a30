"""Print a complete iii session as it crosses the wire, with both lifecycles.

A worker ("calc") connects, registers ``math::add`` and announces itself; a second
worker calls it; the first connection drops and the worker reattaches. Every
frame is built from the protocol models, encoded exactly as the engine writes
it, and decoded back; every state change goes through the lifecycle tables.

Run it with ``./dev run`` (or ``python examples/wire_session.py``).
"""

from __future__ import annotations

import os
import platform
import uuid

from iii_trio import lifecycle as lc
from iii_trio import protocol as p


class Session:
    def __init__(self) -> None:
        self.worker = lc.StateMachine(lc.WORKER_LIFECYCLE)
        self.status: dict[str, lc.StateMachine[lc.WorkerStatus]] = {}

    def frame(self, arrow: str, message: p.Message) -> None:
        text = p.encode(message)
        assert p.decode(text) == message
        print(f"  {arrow:<8} {text}")

    def sdk(self, event: lc.Event) -> None:
        step = self.worker.apply(event)
        print(f"  {'sdk':<8} {step.source.value} → {step.target.value}  ({type(event).__name__})")

    def engine(self, worker_id: str, event: lc.Event) -> None:
        machine = self.status.setdefault(worker_id, lc.StateMachine(lc.WORKER_STATUS_LIFECYCLE))
        step = machine.apply(event)
        print(
            f"  {'engine':<8} worker {worker_id[:8]} {step.source.value} → {step.target.value}"
            f"  ({type(event).__name__})"
        )


def announce() -> p.InvokeFunction:
    return p.InvokeFunction(
        function_id="engine::workers::register",
        data={
            "runtime": "python",
            "version": "0.1.0",
            "name": "calc",
            "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
            "pid": os.getpid(),
            "namespace": None,
        },
        action=p.VoidAction(),
    )


def main() -> None:
    s = Session()
    w1, w2, w1_again = (str(uuid.uuid4()) for _ in range(3))
    token = str(uuid.uuid4())
    call = uuid.uuid4()

    print("calc connects")
    s.engine(w1, lc.HandshakeCompleted())
    s.sdk(lc.SocketOpened())
    s.frame("E→calc", p.WorkerRegistered(worker_id=w1, reattach_token=token))
    s.sdk(lc.RegistrationStarted())
    s.frame("calc→E", p.RegisterFunction(id="math::add", description="Add two numbers"))
    s.frame("calc→E", announce())
    s.sdk(lc.RegistrationCompleted())
    s.engine(w1, lc.NamespaceResolved())

    print("\nanother worker calls math::add")
    s.engine(w2, lc.HandshakeCompleted())
    s.engine(w2, lc.NamespaceResolved())
    s.frame(
        "W2→E", p.InvokeFunction(invocation_id=call, function_id="math::add", data={"a": 2, "b": 3})
    )
    s.engine(w1, lc.InvocationStarted(str(call)))
    s.frame(
        "E→calc",
        p.InvokeFunction(
            invocation_id=call,
            function_id="math::add",
            data={"a": 2, "b": 3, "_caller_worker_id": w2},
        ),
    )
    s.sdk(lc.InvocationStarted(str(call)))
    s.frame(
        "calc→E", p.InvocationResult(invocation_id=call, function_id="math::add", result={"c": 5})
    )
    s.sdk(lc.InvocationFinished(str(call)))
    s.engine(w1, lc.InvocationFinished(str(call)))
    s.frame(
        "E→W2", p.InvocationResult(invocation_id=call, function_id="math::add", result={"c": 5})
    )

    print("\ncalc's connection drops; it reconnects and reattaches")
    s.sdk(lc.ConnectionLost("socket closed"))
    s.sdk(lc.ReconnectScheduled(attempt=1, delay_ms=1000))
    s.engine(w1_again, lc.HandshakeCompleted())
    s.sdk(lc.SocketOpened())
    s.frame("E→calc", p.WorkerRegistered(worker_id=w1_again, reattach_token=str(uuid.uuid4())))
    s.sdk(lc.RegistrationStarted())
    s.frame("calc→E", p.Reattach(previous_worker_id=w1, reattach_token=token))
    s.engine(w1, lc.ConnectionLost("retired by reattach"))
    s.frame("calc→E", p.RegisterFunction(id="math::add", description="Add two numbers"))
    s.frame("calc→E", announce())
    s.sdk(lc.RegistrationCompleted())
    s.engine(w1_again, lc.NamespaceResolved())

    print("\ncalc shuts down")
    s.sdk(lc.ShutdownRequested())
    s.sdk(lc.ShutdownCompleted())
    s.engine(w1_again, lc.ConnectionLost("closed by worker"))


if __name__ == "__main__":
    main()
