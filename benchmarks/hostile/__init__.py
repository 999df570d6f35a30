"""The parts of ``benchmarks/hostile_peers.py``: ``wire`` (a WebSocket client spoken
by hand), ``target`` (what attacks get and give back), ``connections`` and ``messages``
(the attacks), ``honest`` (the honest pair), ``engine`` (the engine's process)."""
