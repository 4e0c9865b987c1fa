"""The fuzzer (issue 9, item 15): seeded requests over every method of every service — built from the
descriptors, mutated from well-formed ones, or not protobuf at all — from a practitioner, a hub operator, the
hub's own workers and a practitioner of another GHT. 2,000 per service in `make test`, 20,000 in `make chaos`:
no INTERNAL, no UNKNOWN, no answer over 5 s, every service still SERVING, every audit chain still intact.
`PARCOURS_FUZZ_SEED=<n>` replays a run."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.kit.audit import AuditKeys, verify
from tests.conftest import Minter
from tests.security.conftest import SecurityHub
from tests.security.fuzz import Generator
from tests.security.world import RPCS, SERVICES, World, make_world, request_type
from tests.support import AUDIT_KEYS, DAUPHINE, LOIRE, bearer
from tests.support.chaos import Chaos

SEED = int(os.environ.get("PARCOURS_FUZZ_SEED", "9009"))
SLOW_SECONDS = 5.0
# Calls in flight: enough to keep the services busy, few enough that a call's time is its own, not a queue's.
CONCURRENCY = 4
GP_LOIRE = "10000000101"
GP_DAUPHINE = "10000000501"
Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Identity:
    name: str
    finess: str  # an establishment's certificate, or `component:<name>`
    metadata: Metadata


@dataclass
class Tally:
    kinds: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


@pytest.fixture(scope="module")
async def world(hub: SecurityHub, mint: Minter) -> World:
    # A world of its own: what the fuzzer does to it (links, cancellations, reversals) concerns no other test.
    return await make_world(hub, mint)


def identities(mint: Minter) -> list[tuple[Identity, int]]:
    """Who calls, with how many shares of the calls each gets."""
    return [
        (Identity("practitioner", LOIRE, bearer(mint(rpps=GP_LOIRE))), 6),
        (
            Identity(
                "hub operator", LOIRE, bearer(mint(staff="ops-fuzzer", roles=["hub_operator", "billing"]))
            ),
            2,
        ),
        (Identity("hub workers", "component:workflows", ()), 1),
        (Identity("another GHT", DAUPHINE, bearer(mint(rpps=GP_DAUPHINE))), 1),
    ]


def plan(
    service: str, count: int, world: World, mint: Minter, seed: int
) -> list[tuple[str, Identity, str, bytes]]:
    """(method, caller, kind of body, body) for `count` calls, all drawn from `seed`."""
    rng = random.Random(f"{seed}/{service}")
    names = [*world.hidden.texts(), world.slot, world.other_slot]
    generator = Generator(rng, names)
    methods = [m.name for m in descriptor_pool.Default().FindServiceByName(SERVICES[service]).methods]
    seeds: dict[str, list[Message]] = {}
    for rpc in RPCS:
        if rpc.service == service:
            seeds.setdefault(rpc.method, []).append(rpc.build(world, world.hidden, LOIRE))
    callers = identities(mint)
    population = [identity for identity, _ in callers]
    weights = [share for _, share in callers]
    planned = []
    for _ in range(count):
        method = rng.choice(methods)
        caller = rng.choices(population, weights)[0]
        kind = rng.choices(("built", "mutated", "garbage"), (4, 4, 2))[0]
        message_type = request_type(service, method)
        seed_message = rng.choice(seeds[method]) if method in seeds else generator.fill(message_type())
        if kind == "built":
            body = generator.built(message_type)
        elif kind == "mutated":
            body = generator.mutated(seed_message)
        else:
            body = generator.garbage(seed_message.SerializeToString())
        planned.append((method, caller, kind, body))
    return planned


async def fuzz(hub: SecurityHub, service: str, planned: list[tuple[str, Identity, str, bytes]]) -> Tally:
    tally = Tally()
    queue: asyncio.Queue[tuple[str, Identity, str, bytes]] = asyncio.Queue()
    for item in planned:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            method, caller, kind, body = queue.get_nowait()
            rpc = hub.channel(service, caller.finess).unary_unary(f"/{SERVICES[service]}/{method}")
            started = time.perf_counter()
            try:
                await rpc(body, metadata=caller.metadata, timeout=SLOW_SECONDS * 2)
                code = "OK"
            except grpc.aio.AioRpcError as error:
                code = error.code().name
            elapsed = time.perf_counter() - started
            tally.kinds[kind] += 1
            tally.codes[code] += 1
            tally.latencies.append(elapsed)
            if code in ("INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED") or elapsed > SLOW_SECONDS:
                tally.failures.append(
                    f"{method} as {caller.name} ({kind}): {code} in {elapsed:.1f} s, body {body[:48].hex()}"
                )

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return tally


@pytest.mark.chaos
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("service", list(SERVICES))
async def test_no_request_makes_a_service_fail(
    service: str, hub: SecurityHub, world: World, mint: Minter, chaos: Chaos
) -> None:
    count = chaos.scale(2_000, 20_000)
    planned = plan(service, count, world, mint, SEED)
    started = time.perf_counter()
    tally = await fuzz(hub, service, planned)
    elapsed = time.perf_counter() - started

    health = health_pb2_grpc.HealthStub(hub.channel(service, LOIRE))
    status = (await health.Check(health_pb2.HealthCheckRequest(service=SERVICES[service]))).status
    report = await verify(hub.admin, AuditKeys.parse(AUDIT_KEYS))
    chain = next((c for c in report.chains if c.chain == service), None)

    latencies = sorted(tally.latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else 0.0
    worst = [code for code in ("INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED") if tally.codes[code]]
    codes = ", ".join(f"{code} {n}" for code, n in tally.codes.most_common())
    over = sum(1 for t in latencies if t > SLOW_SECONDS)
    serving = "SERVING" if status == health_pb2.HealthCheckResponse.SERVING else "NOT SERVING"
    intact = "intact" if chain is not None and chain.intact else "BROKEN"
    chaos.figures(
        f"fuzzer {service}",
        f"{count} requests (seed {SEED}; {tally.kinds['built']} built, {tally.kinds['mutated']} mutated, "
        f"{tally.kinds['garbage']} not protobuf) in {elapsed:.0f} s: {tally.codes['INTERNAL']} INTERNAL, "
        f"{tally.codes['UNKNOWN']} UNKNOWN, {over} over {SLOW_SECONDS:.0f} s (p99 {p99 * 1000:.0f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms), {serving}, audit chain {intact}; {codes}",
    )
    assert not tally.failures, f"{len(tally.failures)} failures ({worst}):\n" + "\n".join(tally.failures[:30])
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert chain is not None and chain.intact, chain
