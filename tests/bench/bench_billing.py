"""The billing service's throughput and latency beside the ceilings of what it stands on.

The billing server runs as its own process (`python -m services.billing`, as in production), over mutual TLS;
the client is this process, keeping 32 calls in flight (closed loop) for a few seconds per measurement, after
a short warm-up. Figures:

- gRPC echo ceiling: grpc.health.v1 Check on the same server, same channel, same mTLS: the transport and the
  Python gRPC server with nothing behind them;
- QuoteAct: a téléexpertise quote (catalog rules, the patient's quota counters read, one audit record), at
  32 in flight and alone (1 in flight: the latency a workflow's activity sees; target p99 ≤ 10 ms);
- one-row INSERT ceiling: raw asyncpg, pool of 10, a one-row INSERT per call in its own transaction;
- RecordAct: a téléconsultation recorded (act row, charge line, one audit record, idempotency lock).

The ratios say how much of each ceiling the service keeps.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc

from services.devstack import free_port, log_tail
from tests.bench import BenchEnv, shown
from tests.billing.builders import paris, teleconsultation, teleexpertise
from tests.support import PAYLOAD_KEYS, component_channel, process_env, repo_root

IN_FLIGHT = 32
WARMUP_SECONDS = 0.5
MEASURE_SECONDS = float(os.environ.get("PARCOURS_BENCH_SECONDS", "3"))
READY_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Measurement:
    name: str
    calls: int
    errors: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float


async def closed_loop(
    name: str, call: Callable[[int], Awaitable[object]], in_flight: int = IN_FLIGHT
) -> Measurement:
    """`in_flight` workers calling back to back: a warm-up, then MEASURE_SECONDS of recorded calls."""
    counter = iter(range(10**9))

    async def run(until: float, latencies: list[float] | None, errors: list[int]) -> None:
        while time.perf_counter() < until:
            started = time.perf_counter()
            try:
                await call(next(counter))
            except (grpc.aio.AioRpcError, asyncpg.PostgresError):
                errors.append(1)
                continue
            if latencies is not None:
                latencies.append(time.perf_counter() - started)

    warm_errors: list[int] = []
    await asyncio.gather(
        *(run(time.perf_counter() + WARMUP_SECONDS, None, warm_errors) for _ in range(in_flight))
    )
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    await asyncio.gather(*(run(started + MEASURE_SECONDS, latencies, errors) for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return Measurement(
        name=name,
        calls=len(latencies),
        errors=len(errors),
        seconds=round(elapsed, 3),
        per_second=round(len(latencies) / elapsed, 1),
        p50_ms=round(cuts[49] * 1000, 2),
        p99_ms=round(cuts[98] * 1000, 2),
    )


def start_process(
    env: BenchEnv, component: str, extra: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str, object]:
    """`python -m services.<component>` on a free port, with its own certificate; (process, address, log)."""
    port = free_port()
    log_file = env.work_dir / f"{component}.log"
    child_env = {
        **process_env(
            env.pki,
            component,
            component=component,
            database_url=env.database_url,
            **{f"{component}_grpc_port": port},
        ),
        **extra,
    }
    log = log_file.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", f"services.{component}"],
        env=child_env,
        cwd=repo_root(),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process, f"127.0.0.1:{port}", log


def start_contracts(env: BenchEnv, directory_address: str) -> tuple[subprocess.Popen[bytes], str, object]:
    """The contracts service as its own process (billing asks it whether an act is covered)."""
    return start_process(
        env,
        "contracts",
        {
            "PARCOURS_DIRECTORY_ADDRESS": directory_address,
            "PARCOURS_TEMPORAL_ADDRESS": env.temporal_address,
            "PARCOURS_PAYLOAD_KEYS": PAYLOAD_KEYS,
            "PARCOURS_DECISION_TRUST_ROOTS_FILE": str(env.pki.ca_file),
        },
    )


async def wait_serving(channel: grpc.aio.Channel, process: subprocess.Popen[bytes], env: BenchEnv) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the billing server exited:\n{log_tail(env.work_dir / 'billing.log')}")
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.1)  # polling a child process's readiness, not a test waiting on itself
    raise RuntimeError(f"the billing server did not serve in time:\n{log_tail(env.work_dir / 'billing.log')}")


async def insert_ceiling(database_url: str) -> Measurement:
    pool = await asyncpg.create_pool(database_url, min_size=10, max_size=10)
    assert pool is not None
    try:
        await pool.execute(
            "CREATE TABLE IF NOT EXISTS public.bench_rows (id uuid PRIMARY KEY, payload text NOT NULL, "
            "created timestamptz NOT NULL DEFAULT now())"
        )

        async def insert(i: int) -> None:
            await pool.execute(
                "INSERT INTO public.bench_rows (id, payload) VALUES ($1, $2)", uuid.uuid4(), f"row {i}"
            )

        return await closed_loop("one-row INSERT (asyncpg, pool 10)", insert)
    finally:
        await pool.close()


def table(rows: list[Measurement], ratios: dict[str, float]) -> str:
    lines = [
        f"{'measurement':<44}{'calls/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'calls':>8}{'errors':>8}",
        "-" * 88,
    ]
    for m in rows:
        lines.append(
            f"{m.name:<44}{m.per_second:>10.0f}{m.p50_ms:>9.2f}{m.p99_ms:>9.2f}{m.calls:>8}{m.errors:>8}"
        )
    lines.append("-" * 88)
    for name, value in ratios.items():
        lines.append(f"{name:<44}{value:>10.2f}")
    return "\n".join(lines)


async def main(env: BenchEnv) -> None:
    # Billing serves once its directory and contracts channels are up; the bench calls as the hub, so the
    # directory (asked only on behalf of other callers) is never on the measured path, nor contracts (asked
    # only for acts needing an ARS contract or declaration: bench_contracts measures those).
    directory, directory_address, directory_log = start_process(env, "directory", {})
    contracts, contracts_address, contracts_log = start_contracts(env, directory_address)
    process, address, log = start_process(
        env,
        "billing",
        {"PARCOURS_DIRECTORY_ADDRESS": directory_address, "PARCOURS_CONTRACTS_ADDRESS": contracts_address},
    )
    channel = component_channel(env.pki, address, "workflows")
    try:
        await wait_serving(channel, process, env)
        health = health_pb2_grpc.HealthStub(channel)
        billing = billing_pb2_grpc.BillingServiceStub(channel)
        check = health_pb2.HealthCheckRequest(service="")
        quote_act = teleexpertise(paris("2025-10-06 10:00"))
        quote_patient = f"patients/{uuid.uuid4()}"
        record_act = teleconsultation(paris("2025-10-06 10:00"))
        run_id = datetime.now(UTC).strftime("%Y%m%d%H%M%S")

        async def echo(_: int) -> None:
            await health.Check(check)

        async def quote(_: int) -> None:
            reply = await billing.QuoteAct(billing_pb2.QuoteActRequest(act=quote_act, patient=quote_patient))
            assert reply.quote.billable

        async def record(i: int) -> None:
            await billing.RecordAct(
                billing_pb2.RecordActRequest(
                    request_id=str(uuid.uuid4()),
                    act_id=f"bench-{run_id}-{i}",
                    patient=f"patients/{uuid.uuid4()}",
                    act=record_act,
                )
            )

        echo_m = await closed_loop("gRPC echo ceiling (health Check, mTLS)", echo)
        quote_m = await closed_loop("QuoteAct (téléexpertise, audited)", quote)
        quote_one = await closed_loop("QuoteAct, 1 in flight", quote, in_flight=1)
        insert_m = await insert_ceiling(env.database_url)
        record_m = await closed_loop("RecordAct (téléconsultation, audited)", record)
    finally:
        await channel.close()
        for child, child_log in [(process, log), (contracts, contracts_log), (directory, directory_log)]:
            child.terminate()
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
            child_log.close()  # type: ignore[attr-defined]
    ratios = {
        "QuoteAct / echo ceiling": round(quote_m.per_second / echo_m.per_second, 3),
        "RecordAct / INSERT ceiling": round(record_m.per_second / insert_m.per_second, 3),
    }
    rows = [echo_m, quote_m, quote_one, insert_m, record_m]
    print(
        f"\nbilling: {IN_FLIGHT} calls in flight, {MEASURE_SECONDS:g} s per measurement after "
        f"{WARMUP_SECONDS:g} s of warm-up; server in its own process; PostgreSQL with fsync off\n"
    )
    print(table(rows, ratios))
    path = env.write_results(
        "billing",
        {
            "in_flight": IN_FLIGHT,
            "warmup_seconds": WARMUP_SECONDS,
            "measure_seconds": MEASURE_SECONDS,
            "measurements": {
                key: asdict(m)
                for key, m in zip(("echo", "quote", "quote_one", "insert", "record"), rows, strict=True)
            },
            "ratios": ratios,
        },
    )
    print(f"\nresults: {shown(path)}")
