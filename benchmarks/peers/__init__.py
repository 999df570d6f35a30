"""The processes the benchmarks start: workers, callers, relays and idle clients.

Each is a small script with its own ``main``, run as ``python -m benchmarks.peers.<name>``
so that every process under measurement is a fresh interpreter. Callers speak a tiny
line protocol on stdin/stdout with the orchestrator: ``READY`` once warmed up, then
they wait for a line on stdin, run the measured calls and print one JSON line.
"""
