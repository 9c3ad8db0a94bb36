"""joiner.claims.Turns: deliveries go in by journal sequence, whatever order their writes finish in."""

from __future__ import annotations

import asyncio

import pytest

from joiner.claims import Turns

pytestmark = pytest.mark.anyio


async def test_deliveries_take_their_turns_in_sequence_order_and_a_given_up_one_passes():
    turns, order = Turns(), []

    async def delivery(seq: int, written: asyncio.Event, gives_up: bool = False) -> None:
        await written.wait()
        if not gives_up:
            await turns.wait(seq)
            order.append(seq)
        turns.done(seq)

    writes = [asyncio.Event() for _ in range(4)]
    tasks = [asyncio.ensure_future(delivery(seq, writes[seq], gives_up=seq == 1)) for seq in range(4)]
    for seq in (3, 2, 1, 0):  # the writes finish in reverse order
        writes[seq].set()
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    assert order == [0, 2, 3] and turns.next == 4
