"""`sdk.run`: `asyncio.run`, except that SIGINT or SIGTERM cancels the main coroutine
(so that its cleanup runs) and ends without an exception."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from sdk import run

pytestmark = pytest.mark.timeout(10)


def test_it_returns_what_main_returns() -> None:
    async def main() -> int:
        return 7

    assert run(main()) == 7


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_cancels_main_lets_its_cleanup_run_and_returns_none(stop: signal.Signals) -> None:
    cleaned_up: list[bool] = []

    async def main() -> int:
        try:
            os.kill(os.getpid(), stop)
            await asyncio.Event().wait()
            return 1
        finally:
            await asyncio.sleep(0)  # cleanup may await, as a deregistration does
            cleaned_up.append(True)

    assert run(main()) is None
    assert cleaned_up == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_during_cleanup_ends_it_quietly_too() -> None:
    async def main() -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.Event().wait()
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # impatient: cleanup is interrupted
            await asyncio.Event().wait()

    assert run(main()) is None


def test_a_cancellation_that_no_signal_caused_is_not_hidden() -> None:
    async def main() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        run(main())


def test_an_error_of_main_is_raised() -> None:
    async def main() -> None:
        raise LookupError("no such thing")

    with pytest.raises(LookupError, match="no such thing"):
        run(main())
