"""Bounded waits for engine tests that run workers in their own event loop."""

import asyncio
from collections.abc import Callable

import pytest

from webapp.engine.workers import Worker


async def until(predicate: Callable[[], bool], what: str, timeout: float = 3.0) -> None:
    """Poll `predicate` while the loop runs the workers; fail after `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.002)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for {what}")


async def ended(worker: Worker, timeout: float = 5.0) -> Worker:
    """Wait for a worker's task to end by itself (without cancelling it on timeout)."""
    done, _ = await asyncio.wait([worker.task], timeout=timeout)
    assert done, f"{worker.id} still {worker.state} after {timeout} s"
    return worker


def of_type(worker: Worker, kind: str) -> list:
    """A worker's kept events of one type."""
    return [event for event in worker.history if event.type == kind]
