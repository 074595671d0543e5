"""`run`: `asyncio.run` for a service's main coroutine, which Ctrl-C (or SIGTERM)
stops quietly, the way a service is meant to stop: its `async with ServiceClient`
blocks are left, which deregisters its instances, and no traceback is printed."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run"]

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run(main: Coroutine[Any, Any, T]) -> T | None:
    """Run `main` like `asyncio.run` and return what it returns; or, when the process
    gets SIGINT (Ctrl-C) or SIGTERM first, cancel it and return None once it has
    unwound, without a traceback.

    Cancelling `main` leaves its `async with ServiceClient(...)` blocks as any
    exception would: the client deregisters its instances and closes. A second signal
    while that runs stops the process at once (SIGINT: without a traceback either).

        async def main() -> None:
            async with ServiceClient("nats://127.0.0.1:4222") as client:
                await client.register("orders", "orders-1")
                await asyncio.Event().wait()  # until Ctrl-C

        sdk.run(main())

    Outside the main thread, where Python delivers no signals, it is `asyncio.run`.
    """
    stopped: list[signal.Signals] = []

    async def until_stopped() -> T:
        if threading.current_thread() is not threading.main_thread():
            return await main
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop(received: signal.Signals) -> None:
            stopped.append(received)
            # The next one gets the default behaviour: the process stops at once.
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)
            task.cancel()

        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop, sig)
        try:
            return await main
        finally:
            if not stopped:
                for sig in STOP_SIGNALS:
                    loop.remove_signal_handler(sig)

    try:
        return asyncio.run(until_stopped())
    except KeyboardInterrupt:  # Ctrl-C before the handlers were in place, or a second one
        return None
    except asyncio.CancelledError:
        if not stopped:
            raise  # cancelled by something else: not ours to hide
        return None
