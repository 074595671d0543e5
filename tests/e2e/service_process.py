"""A service instance in its own process, for tests that kill, pause or signal it.

Usage: python -m tests.e2e.service_process NATS_URL SERVICE INSTANCE [INSTANCE...]
         [--deregister-on-exit]
Prints "READY" on stdout once every instance is registered, then runs until
stopped; the SDK heartbeats in the background.
"""

from __future__ import annotations

import asyncio
import os
import sys

from sdk import ServiceClient


async def main(argv: list[str]) -> None:
    deregister_on_exit = "--deregister-on-exit" in argv
    url, service, *instances = [arg for arg in argv if not arg.startswith("--")]
    async with ServiceClient(url, deregister_on_exit=deregister_on_exit) as client:
        for instance in instances:
            await client.register(service, instance, {"pid": str(os.getpid())})
        print("READY", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1:]))
    except KeyboardInterrupt:
        pass
