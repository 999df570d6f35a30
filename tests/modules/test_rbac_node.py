"""The official Node SDK (npm ``iii-sdk``) as a client of an RBAC worker port: its
``registerWorker(url, {headers})`` carries the token the auth function reads, and the
session's rules, hook, prefix and middleware apply to it as to the Python SDK
(``test_rbac_sdk.py``, whose trusted worker and rules this test reuses). The scenario
script is tests/node/rbac_edge.mjs.
"""

from __future__ import annotations

import json

from tests.modules.test_rbac_sdk import call, rbac_url, setup, taken
from tests.test_official_node_sdk import WAIT, NodeScript, node_executable


def test_a_node_worker_on_the_rbac_port_gets_its_sessions_rules() -> None:
    node = node_executable()  # skips in its body, so the skips fold into one line
    with setup() as (sim, server, seen):
        calls = [
            ("app::public::echo", {"n": 1}),
            ("app::private", {}),
            ("engine::functions::list", {}),
        ]
        args = [
            part for function_id, payload in calls for part in (function_id, json.dumps(payload))
        ]
        running = NodeScript(node, "rbac_edge.mjs", rbac_url(sim), "tenant", *args)
        try:
            sim.wait_for(lambda e: "tenant-7::edge::echo" in e.function_ids(), timeout=WAIT)
            assert taken(seen, "auth")["headers"]["x-token"] == "tenant"
            # Registered under the session's prefix; the Node worker answers its own id.
            answer = call(server, "tenant-7::edge::echo", {"v": 1})
            assert answer["from_node"]["v"] == 1
            lines = running.finish()
        finally:
            running.kill()
    results = {
        line.get("function_id") or line["called"]: line
        for line in lines
        if line["event"] in ("result", "error")
    }
    assert [line["event"] for line in lines][-1] == "done"
    assert results["app::public::echo"]["result"] == {"n": 1, "user": "t7"}
    forbidden = results["app::private"]
    assert (forbidden["event"], forbidden["code"]) == ("error", "FORBIDDEN")
    listed = {f["function_id"] for f in results["engine::functions::list"]["result"]["functions"]}
    assert listed == {"app::public::echo", "app::flagged"}
