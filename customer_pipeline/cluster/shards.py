"""Shard planning: a counted walk's units cut into contiguous ranges, one Dask task each."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

SHARDS_PER_WORKER: Final = 2  # a slow shard then holds up half a worker, not a whole one


@dataclass(frozen=True)
class ShardSpec:
    """What one task is told: its units, the walk's first page, and how to treat a checkpoint.

    ``lo``/``hi`` are the units it fetches (``hi`` None: to the walk's end; ``whole``: a
    sequential walk, all of it). ``token`` names the client's invocation: a task that finds
    its own token on its shard's checkpoint is a retry of that invocation and resumes it.
    """

    index: int
    lo: int
    hi: int | None
    first_number: int
    # Out of the repr: Dask logs a failed task's arguments, and a body may be large.
    first_headers: dict[str, str] | None = field(repr=False)
    first_body: bytes = field(repr=False)
    token: str
    resume: bool
    whole: bool = False

    @property
    def name(self) -> str:
        """Its units, for messages and its checkpoint's folder: "5-9", "10-end", "all"."""
        if self.whole:
            return "all"
        return f"{self.lo}-{'end' if self.hi is None else self.hi}"


def plan_shards(first: int, last: int, count: int) -> list[tuple[int, int | None]]:
    """Units ``first``..``last`` as at most ``count`` contiguous ranges of near-equal size.

    The last range is open-ended (hi None): units a later page reports beyond ``last`` are
    still fetched, by that shard.
    """
    units = last - first + 1
    count = max(1, min(count, units))
    size, extra = divmod(units, count)
    ranges: list[tuple[int, int | None]] = []
    lo = first
    for index in range(count):
        hi = lo + size + (1 if index < extra else 0) - 1
        ranges.append((lo, hi if index < count - 1 else None))
        lo = hi + 1
    return ranges


def default_shards(workers: int) -> int:
    """--shards when it is not given."""
    return max(1, SHARDS_PER_WORKER * workers)
