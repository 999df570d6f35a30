"""An official-SDK (``iii`` 0.25) worker serving ``bench::echo`` until killed.

``--otel`` leaves OpenTelemetry on (the SDK's default); without it, it is off.
"""

from __future__ import annotations

import argparse
import threading
from typing import Any

from ._caller import FUNCTION_ID


async def echo(data: Any) -> Any:
    return data


def main() -> None:
    from iii import InitOptions, register_worker

    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--otel", action="store_true")
    args = parser.parse_args()
    options: dict[str, Any] = {"worker_name": "bench-worker", "enable_metrics_reporting": False}
    if not args.otel:
        options["otel"] = {"enabled": False}
    sdk = register_worker(args.url, InitOptions(**options))
    sdk.register_function(FUNCTION_ID, echo)
    print("SERVING", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
