"""How an app turns one request of n items into n items with their own seeds: item k gets
`seed + k` (a random start for -1 / None), so each item can be made again alone with its seed and
items of different requests can share one `generate()` call. The server and batch jobs share it."""

from __future__ import annotations

import random

__all__ = ["item_seeds"]


def item_seeds(seed: int | None, count: int) -> list[int]:
    """Seeds of `count` items. Other negative seeds are passed on for generate() to refuse."""
    if seed is None or seed == -1:
        seed = random.SystemRandom().randrange(0, 2**31 - 1)
    return [seed + k for k in range(count)] if seed >= 0 else [seed] * count
