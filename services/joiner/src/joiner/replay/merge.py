"""The files merged by event time: runs of consecutive events of one file, in the order ``heapq.merge``
would give them one by one."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass

from joiner.replay.inputs import Block, Reader


@dataclass(slots=True)
class Head:
    """Where the merge is in one file."""

    order: int
    blocks: Iterator[Block]
    block: Block
    at: int = 0


def heads_of(readers: list[Reader]) -> list[Head]:
    """Each file's first block, read in file order (so that the lines skipped before each file's first
    good line are known before anything is merged, as ``heapq.merge`` reads its first items)."""
    heads = []
    for order, reader in enumerate(readers):
        blocks = reader.blocks()
        if (first := next(blocks, None)) is not None:
            heads.append(Head(order, blocks, first))
    return heads


def merged_runs(heads: list[Head]) -> Iterator[tuple[int, Block, int, int]]:
    """``(file order, block, start, stop)``: consecutive events of one file in the merged order, which is
    that of the key (event time, file order, line number), as ``heapq.merge`` would give them one by one."""
    while heads:
        head = min(heads, key=lambda h: (h.block.times[h.at], h.order))
        block, start = head.block, head.at
        times, stop = block.times, len(block.times)
        others = [(h.block.times[h.at], h.order) for h in heads if h is not head]
        if others:
            bound, bound_order = min(others)
            earlier = head.order < bound_order  # at the same time the earlier file goes first
            if block.ordered:
                stop = (bisect_right if earlier else bisect_left)(times, bound, start + 1)
            else:
                stop = start + 1
                while stop < len(times) and (times[stop] < bound or (earlier and times[stop] == bound)):
                    stop += 1
        yield head.order, block, start, stop
        if stop < len(times):
            head.at = stop
        elif (following := next(head.blocks, None)) is not None:
            head.block, head.at = following, 0
        else:
            heads.remove(head)
