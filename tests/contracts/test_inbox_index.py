"""The inbox's default page reads its index in order: at 50,000 cases a page costs the 51 rows it shows, not a
sort of every open case (tests/bench/bench_console.py measures it)."""

from __future__ import annotations

import json

import asyncpg

from services.contracts.store import list_cases_query


def _nodes(plan: dict[str, object]) -> list[dict[str, object]]:
    found = [plan]
    for child in plan.get("Plans", []):  # type: ignore[attr-defined]
        found += _nodes(child)
    return found


async def test_the_default_inbox_order_is_read_from_its_index_without_a_sort(pool: asyncpg.Pool) -> None:
    query = list_cases_query("TO_PROCESS", "DUE_TIME", include_closed=False)
    async with pool.acquire() as conn, conn.transaction():
        # Whatever the few rows of the suite's database make the planner prefer (a sort of a handful of rows
        # is cheap): is there an index that gives this order under these predicates?
        await conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off")
        [row] = await conn.fetch(
            "EXPLAIN (FORMAT JSON) " + query,
            "84", None, False, [], "staff/agent84",
            [], [], [], "", "", "", "", "", "staff/agent84", None, False, 0,
            ["ARS_OFFICER"], "staff/agent84", None, None, 51,
        )  # fmt: skip
    nodes = _nodes(json.loads(row[0])[0]["Plan"])
    assert "cases_inbox_due_idx" in {n.get("Index Name") for n in nodes}
    assert "Sort" not in {n["Node Type"] for n in nodes}
