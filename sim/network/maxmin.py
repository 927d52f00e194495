"""Max-min fair rates by progressive filling (water-filling).

Every flow's rate rises together until some link is full; the flows crossing that link are frozen
at its fair share, the link's capacity is used up, and the rest keep rising. The result is the
unique allocation where no flow can get more without taking from a flow that has no more than it
(Bertsekas & Gallager, *Data Networks*, section 6.5.2). A flow may also carry its own rate cap
(layer-by-layer KV transfer cannot send faster than prefill produces), treated as a private link.

The next link to fill is kept in a heap of fair shares (stale entries skipped), so one call costs
O((links + flows x path length) log links) rather than a pass over every link per level; it runs
only when a flow starts or finishes or a link changes.
"""
from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence


def max_min_rates(flows: Mapping[int, Sequence[str]], capacity: Mapping[str, float],
                  caps: Mapping[int, float] | None = None) -> dict[int, float]:
    """Rates (same unit as ``capacity``) for ``flows`` (flow id -> ids of the links it crosses).

    A flow crossing no link and having no cap gets ``inf``. Every link a flow names must be in
    ``capacity``; a capacity of 0 gives every flow on it rate 0.
    """
    caps = caps or {}
    users: dict[str, list[int]] = {}
    for f, links in flows.items():
        for link in links:
            users.setdefault(link, []).append(f)
    remaining = {link: float(capacity[link]) for link in users}
    active = {link: len(us) for link, us in users.items()}
    share = {link: remaining[link] / active[link] for link in users}
    # entries (level, 0, link) for links and (level, 1, flow) for caps; kinds never compare keys
    heap: list[tuple[float, int, str | int]] = [(s, 0, link) for link, s in share.items()]
    heap += [(float(c), 1, f) for f, c in caps.items() if f in flows]
    heapq.heapify(heap)
    rates: dict[int, float] = {f: float("inf") for f, links in flows.items() if not links and f not in caps}

    def freeze(f: int, level: float, touched: set[str]) -> None:
        rates[f] = level
        for link in flows[f]:
            remaining[link] = max(0.0, remaining[link] - level)
            active[link] -= 1
            touched.add(link)

    while heap and len(rates) < len(flows):
        level, kind, key = heapq.heappop(heap)
        touched: set[str] = set()
        if kind == 1:
            if key in rates:
                continue
            freeze(int(key), level, touched)
        else:
            link = str(key)
            if active[link] == 0 or share[link] != level:
                continue  # stale: the link's share moved since this entry was pushed
            for f in users[link]:
                if f not in rates:
                    freeze(f, level, touched)
        for link in touched:
            if active[link] > 0:
                # never below the current level (float rounding could otherwise undercut it)
                share[link] = max(level, remaining[link] / active[link])
                heapq.heappush(heap, (share[link], 0, link))
    return rates
