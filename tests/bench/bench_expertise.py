"""Téléexpertise: creation latency at a steady rate, and case throughput beside Temporal's own ceiling.

Every component runs as its own process, as `make run` starts them: the directory, billing and expertise
services (mutual TLS, tokens, audit) and the teleexpertise worker; the load comes from this process, as GHT
Loire's information system acting for a GP. Figures:

1. Creation at a sustained 10 requests/s (open loop: requests leave on schedule whatever the answers):
   `CreateTeleexpertiseRequest` latency, which covers saving the request, starting its workflow and waiting
   (update-with-start) until the routing activity has written the projection and the pool's notifications;
   and the same measured inside the database (request saved → pool notification written).
2. Temporal's ceiling on this machine, in this run: a workflow with one activity, started and awaited,
   32 in flight (client and worker in this process, sandboxed and traced like ours).
3. Sustained case intake, 32 in flight: requests created and routed per second — one workflow and one
   (local) activity each, plus the gRPC edge, the directory's patient lookup and both audit chains. Its ratio
   to (2) is the target (≥ 0.7). (2) and (3) alternate in three rounds so that both see the same background
   load.
4. Whole cases, 16 in flight: created, accepted, reported, billed (RQD + TE2); target ≥ 0.3 of (2). A whole
   case is one workflow with three updates and five activities. Each case has a patient of its own: billing's
   yearly téléexpertise quota (4 acts per professional and patient) must never refuse one, so distinct
   patient/expert pairs, as many as the loop can use.

`PARCOURS_BENCH_SECONDS` (default 8) sets the length of each closed-loop measurement; the steady-rate one
lasts 1.5 times that. The run ends in about a minute.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

with workflow.unsafe.imports_passed_through():
    # The sandbox re-imports this module to run the ceiling's workflow; none of this is workflow code.
    import base64
    import random
    import subprocess

    import asyncpg
    import grpc
    from google.type import date_pb2
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from parcours.directory.v1 import directory_pb2, directory_pb2_grpc
    from parcours.expertise.v1 import expertise_pb2, expertise_pb2_grpc

    from services.devstack import free_port, log_tail
    from services.directory.identifiers import nir_key
    from services.directory.seed import seed_demo
    from services.kit.settings import TemporalSettings
    from services.kit.temporal import build_worker, connect_client
    from services.kit.tokens import mint_token
    from tests.bench import BenchEnv
    from tests.support import (
        AUDIENCE,
        ISSUER,
        LOIRE,
        bearer,
        component_channel,
        establishment_channel,
        process_env,
        repo_root,
    )

MEASURE_SECONDS = float(os.environ.get("PARCOURS_BENCH_SECONDS", "8"))
RATE_PER_SECOND = 10.0
IN_FLIGHT = 32
ROUNDS = 3
WHOLE_CASES_IN_FLIGHT = 16
READY_TIMEOUT_SECONDS = 90.0
GP = "10000000101"
DERM_LOIRE = "10000002001"
TEST_NIR_OID = "1.2.250.1.213.1.4.10"


# --- Temporal's own ceiling ----------------------------------------------------------------------------


@activity.defn(name="bench_noop")
async def noop(value: int) -> int:
    return value


@workflow.defn(name="BenchOneActivity")
class OneActivityWorkflow:
    @workflow.run
    async def run(self, value: int) -> int:
        return await workflow.execute_activity(
            noop,
            value,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )


# --- figures ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    name: str
    count: int
    errors: int
    seconds: float
    per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


def measurement(name: str, latencies: list[float], errors: int, seconds: float) -> Measurement:
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return Measurement(
        name=name,
        count=len(latencies),
        errors=errors,
        seconds=round(seconds, 2),
        per_second=round(len(latencies) / seconds, 2) if seconds else 0.0,
        p50_ms=round(cuts[49] * 1000, 1),
        p95_ms=round(cuts[94] * 1000, 1),
        p99_ms=round(cuts[98] * 1000, 1),
    )


@dataclass
class Sample:
    """Latencies and errors of calls over some seconds of measurement (several rounds add up)."""

    latencies: list[float]
    errors: int = 0
    seconds: float = 0.0

    def add(self, other: Sample) -> None:
        self.latencies += other.latencies
        self.errors += other.errors
        self.seconds += other.seconds


async def closed_loop(
    name: str, call: Callable[[int], Awaitable[object]], *, in_flight: int, seconds: float
) -> Sample:
    """`in_flight` callers back to back for `seconds`, after a warm-up of a tenth of that."""
    counter = iter(range(10**9))

    async def run(until: float, latencies: list[float] | None, errors: list[BaseException]) -> None:
        while time.perf_counter() < until:
            started = time.perf_counter()
            try:
                await call(next(counter))
            except Exception as error:  # a failed call is counted, not fatal
                errors.append(error)
                continue
            if latencies is not None:
                latencies.append(time.perf_counter() - started)

    warm: list[BaseException] = []
    await asyncio.gather(*(run(time.perf_counter() + seconds / 10, None, warm) for _ in range(in_flight)))
    latencies: list[float] = []
    errors: list[BaseException] = []
    started = time.perf_counter()
    await asyncio.gather(*(run(started + seconds, latencies, errors) for _ in range(in_flight)))
    if errors:
        print(f"  {name}: {len(errors)} errors, first: {errors[0]!r}", flush=True)
    return Sample(latencies, len(errors), time.perf_counter() - started)


async def open_loop(
    name: str, call: Callable[[int], Awaitable[object]], *, rate: float, seconds: float
) -> Measurement:
    """Calls leaving every 1/rate seconds whatever the previous ones are doing."""
    latencies: list[float] = []
    errors: list[BaseException] = []

    async def one(i: int) -> None:
        started = time.perf_counter()
        try:
            await call(i)
        except Exception as error:
            errors.append(error)
            return
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    tasks = []
    for i in range(int(rate * seconds)):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # the schedule of an open-loop load, not a wait for a result
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    if errors:
        print(f"  {name}: {len(errors)} errors, first: {errors[0]!r}", flush=True)
    result = measurement(name, latencies, len(errors), time.perf_counter() - started)
    return Measurement(**{**result.__dict__, "per_second": round(len(latencies) / seconds, 2)})


# --- the stack as processes ------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    address: str


def spawn(env: BenchEnv, name: str, module: str, certificate: str, extra: dict[str, str]) -> Child:
    port = free_port()
    child_env = {
        **process_env(
            env.pki,
            certificate,
            component=name,
            database_url=env.database_url,
            grpc_port=port,
            log_level="WARNING",
        ),
        **extra,
    }
    log = (env.work_dir / f"{name}.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", module],
        env=child_env,
        cwd=repo_root(),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return Child(name, process, f"127.0.0.1:{port}")


async def wait_serving(env: BenchEnv, child: Child) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    async with component_channel(env.pki, child.address, "cli") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited:\n{log_tail(env.work_dir / f'{child.name}.log')}")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)  # polling a child process's readiness
    raise RuntimeError(f"{child.name} did not serve in time:\n{log_tail(env.work_dir / f'{child.name}.log')}")


def stop(children: list[Child]) -> None:
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.terminate()
    for child in reversed(children):
        try:
            child.process.wait(15)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


# --- load ------------------------------------------------------------------------------------------------


def token(env: BenchEnv, rpps: str, specialty: str) -> tuple[tuple[str, str], ...]:
    return bearer(
        mint_token(
            signing_key_file=env.pki.signing_key_file,
            kid=env.pki.signing_kid,
            issuer=ISSUER,
            audience=AUDIENCE,
            subject=f"8{rpps}",
            profession="PROFESSION_PHYSICIAN",
            specialty=specialty,
            roles=(),
            region=None,
            ttl=timedelta(hours=2),
        )
    )


async def create_patients(env: BenchEnv, directory: str, count: int) -> list[str]:
    """Fresh patients known at GHT Loire (billing's yearly quota counts per patient)."""
    rng = random.Random(20260101)
    metadata = token(env, GP, "SPECIALTY_GENERAL_MEDICINE")
    async with establishment_channel(env.pki, directory, LOIRE) as channel:
        stub = directory_pb2_grpc.DirectoryServiceStub(channel)

        async def one(i: int) -> str:
            born = date(1940 + i % 60, 1 + i % 12, 1 + i % 28)
            place = f"42{rng.randint(1, 999):03d}"
            first13 = f"{1 + i % 2}{born.year % 100:02d}{born.month:02d}{place}{i % 1000:03d}"
            reply = await stub.CreatePatient(
                directory_pb2.CreatePatientRequest(
                    request_id=str(uuid.uuid4()),
                    ins=directory_pb2.InsIdentityInput(
                        matricule=first13 + nir_key(first13),
                        oid=TEST_NIR_OID,
                        birth_family_name=f"BANC{i}",
                        birth_given_names="ESSAI",
                        birth_date=date_pb2.Date(year=born.year, month=born.month, day=born.day),
                        sex=directory_pb2.SEX_MALE if i % 2 == 0 else directory_pb2.SEX_FEMALE,
                        birth_place_code=place,
                    ),
                    identity_status=directory_pb2.IDENTITY_STATUS_QUALIFIED,
                    local_identifier=directory_pb2.LocalIdentifier(
                        establishment=f"establishments/{LOIRE}", ipp=f"BENCH-{i}"
                    ),
                ),
                metadata=metadata,
            )
            return str(reply.patient.name)

        patients: list[str] = []
        for start in range(0, count, 50):
            patients += await asyncio.gather(*(one(i) for i in range(start, min(count, start + 50))))
        return patients


def request(patient: str) -> expertise_pb2.CreateTeleexpertiseRequestRequest:
    return expertise_pb2.CreateTeleexpertiseRequestRequest(
        request_id=str(uuid.uuid4()),
        teleexpertise_request=expertise_pb2.TeleexpertiseRequestInput(
            patient=patient,
            patient_consent=True,
            specialty=4,  # SPECIALTY_DERMATOLOGY: the GHT Loire pool
            question="Lésion pigmentée : exérèse ?",
            clinical_context="Lésion de 8 mm, asymétrique, évolutive depuis 6 mois.",
            urgency=expertise_pb2.URGENCY_ROUTINE,
        ),
    )


def table(rows: list[Measurement], ratios: dict[str, float]) -> str:
    lines = [
        f"{'measurement':<58}{'per s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'count':>7}{'errors':>7}",
        "-" * 107,
    ]
    for m in rows:
        lines.append(
            f"{m.name:<58}{m.per_second:>8.1f}{m.p50_ms:>9.1f}{m.p95_ms:>9.1f}{m.p99_ms:>9.1f}"
            f"{m.count:>7}{m.errors:>7}"
        )
    lines.append("-" * 107)
    for name, value in ratios.items():
        lines.append(f"{name:<58}{value:>8.2f}")
    return "\n".join(lines)


async def server_side_routing(database_url: str, names: list[str]) -> Measurement:
    """Request saved → its pool's notification written, as the database's clocks saw it."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """
            SELECT EXTRACT(EPOCH FROM (min(n.create_time) - r.create_time)) AS seconds
            FROM expertise.requests r JOIN expertise.notifications n ON n.case_id = r.case_id
            WHERE r.case_id = ANY($1::uuid[]) AND n.kind = 'ROUTED'
            GROUP BY r.case_id, r.create_time
            """,
            [uuid.UUID(n.removeprefix("teleexpertiseRequests/")) for n in names],
        )
    finally:
        await conn.close()
    latencies = [float(r["seconds"]) for r in rows]
    return measurement(
        "  same, in the database (saved → pool notification)", latencies, len(names) - len(rows), 0
    )


async def main(env: BenchEnv) -> None:
    keys = "bench:" + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    pool = await asyncpg.create_pool(env.database_url, min_size=1, max_size=4)
    assert pool is not None
    try:
        await seed_demo(pool)
    finally:
        await pool.close()

    children: list[Child] = []
    temporal_env = {"PARCOURS_TEMPORAL_ADDRESS": env.temporal_address, "PARCOURS_PAYLOAD_KEYS": keys}
    try:
        directory = spawn(env, "directory", "services.directory", "directory", {})
        children.append(directory)
        # Billing serves once its contracts channel is up too (it asks contracts about acts needing one).
        contracts = spawn(
            env,
            "contracts",
            "services.contracts",
            "contracts",
            {
                "PARCOURS_DIRECTORY_ADDRESS": directory.address,
                **temporal_env,
                "PARCOURS_DECISION_TRUST_ROOTS_FILE": str(env.pki.ca_file),
            },
        )
        children.append(contracts)
        billing = spawn(
            env,
            "billing",
            "services.billing",
            "billing",
            {
                "PARCOURS_DIRECTORY_ADDRESS": directory.address,
                "PARCOURS_CONTRACTS_ADDRESS": contracts.address,
            },
        )
        children.append(billing)
        await wait_serving(env, directory)
        await wait_serving(env, billing)
        addresses = {
            "PARCOURS_DIRECTORY_ADDRESS": directory.address,
            "PARCOURS_BILLING_ADDRESS": billing.address,
        }
        expertise = spawn(env, "expertise", "services.expertise", "expertise", {**temporal_env, **addresses})
        children.append(expertise)
        worker = spawn(
            env,
            "workflows-teleexpertise",
            "workflows.teleexpertise",
            "workflows",
            {**temporal_env, **addresses},
        )
        children.append(worker)
        await wait_serving(env, expertise)

        rate_seconds = MEASURE_SECONDS * 1.5
        # More than the loop can use at the Temporal ceiling of this machine (~30 workflows/s), warm-up
        # included: each whole case takes the next patient, never one already billed with this expert.
        whole_cases = int(MEASURE_SECONDS * 1.1 * 40)
        patients = await create_patients(env, directory.address, 40 + whole_cases)
        gp = token(env, GP, "SPECIALTY_GENERAL_MEDICINE")
        derm = token(env, DERM_LOIRE, "SPECIALTY_DERMATOLOGY")
        client = await connect_client(
            TemporalSettings(temporal_address=env.temporal_address, payload_keys=keys)
        )
        async with establishment_channel(env.pki, expertise.address, LOIRE) as channel:
            stub = expertise_pb2_grpc.ExpertiseServiceStub(channel)
            created: list[str] = []

            async def create(i: int) -> None:
                reply = await stub.CreateTeleexpertiseRequest(request(patients[i % 40]), metadata=gp)
                assert (
                    reply.teleexpertise_request.state
                    == expertise_pb2.TeleexpertiseRequest.STATE_AWAITING_EXPERT
                )
                created.append(reply.teleexpertise_request.name)

            print(f"bench expertise: {RATE_PER_SECOND:.0f} creations/s for {rate_seconds:.0f} s", flush=True)
            for i in range(20):
                await create(i)
            created.clear()
            steady = await open_loop(
                f"create → routed, pool notified, at {RATE_PER_SECOND:.0f}/s (open loop)",
                create,
                rate=RATE_PER_SECOND,
                seconds=rate_seconds,
            )
            in_database = await server_side_routing(env.database_url, created)

            task_queue = f"bench-ceiling-{uuid.uuid4()}"
            async with build_worker(
                client,
                task_queue=task_queue,
                workflows=[OneActivityWorkflow],
                activities=[noop],
                # Sandboxed like the teleexpertise workflow, for a fair ceiling. The sandbox imports this
                # module's package, whose __init__ (the harness) imports the PKI helpers: passed through.
                workflow_runner=SandboxedWorkflowRunner(
                    restrictions=SandboxRestrictions.default.with_passthrough_modules(
                        "tests", "services", "cryptography"
                    )
                ),
            ):

                async def one_activity(i: int) -> None:
                    await client.execute_workflow(
                        OneActivityWorkflow.run, i, id=f"bench-ceiling-{uuid.uuid4()}", task_queue=task_queue
                    )

                # The two alternate in rounds, so that both see the same background load (the cores are shared
                # with whatever else runs on the machine).
                ceiling_sample, intake_sample = Sample([]), Sample([])
                for round_ in range(ROUNDS):
                    print(
                        f"bench expertise: round {round_ + 1}/{ROUNDS}: ceiling, then case intake", flush=True
                    )
                    ceiling_sample.add(
                        await closed_loop(
                            "ceiling", one_activity, in_flight=IN_FLIGHT, seconds=MEASURE_SECONDS / ROUNDS
                        )
                    )
                    intake_sample.add(
                        await closed_loop(
                            "intake", create, in_flight=IN_FLIGHT, seconds=MEASURE_SECONDS / ROUNDS
                        )
                    )
            ceiling = measurement(
                f"Temporal ceiling: workflow + 1 activity ({IN_FLIGHT} in flight)",
                ceiling_sample.latencies,
                ceiling_sample.errors,
                ceiling_sample.seconds,
            )
            intake = measurement(
                f"case intake: created + routed ({IN_FLIGHT} in flight)",
                intake_sample.latencies,
                intake_sample.errors,
                intake_sample.seconds,
            )

            print("bench expertise: whole cases", flush=True)
            derm_stub = expertise_pb2_grpc.ExpertiseServiceStub(channel)

            async def whole_case(i: int) -> None:
                if i >= whole_cases:
                    raise RuntimeError(
                        f"more than {whole_cases} whole cases: raise the bench's patient count"
                    )
                reply = await stub.CreateTeleexpertiseRequest(request(patients[40 + i]), metadata=gp)
                name = reply.teleexpertise_request.name
                await derm_stub.AcceptTeleexpertiseRequest(
                    expertise_pb2.AcceptTeleexpertiseRequestRequest(request_id=str(uuid.uuid4()), name=name),
                    metadata=derm,
                )
                await derm_stub.SubmitTeleexpertiseReport(
                    expertise_pb2.SubmitTeleexpertiseReportRequest(
                        request_id=str(uuid.uuid4()),
                        name=name,
                        report=expertise_pb2.ReportInput(summary="Naevus bénin, surveillance."),
                    ),
                    metadata=derm,
                )
                result: Any = await client.get_workflow_handle(
                    f"teleexpertise-{name.removeprefix('teleexpertiseRequests/')}"
                ).result()
                assert result["billing_state"] == "BILLED", result

            whole_name = f"whole case: create, accept, report, billed ({WHOLE_CASES_IN_FLIGHT} in flight)"
            whole_sample = await closed_loop(
                whole_name, whole_case, in_flight=WHOLE_CASES_IN_FLIGHT, seconds=MEASURE_SECONDS
            )
            whole = measurement(whole_name, whole_sample.latencies, whole_sample.errors, whole_sample.seconds)
    finally:
        stop(children)

    ratios = {
        "case intake / Temporal ceiling (target ≥ 0.7)": round(intake.per_second / ceiling.per_second, 2),
        "whole cases / Temporal ceiling": round(whole.per_second / ceiling.per_second, 2),
    }
    rows = [steady, in_database, ceiling, intake, whole]
    print(table(rows, ratios), flush=True)
    path = env.write_results(
        "expertise",
        {
            "measure_seconds": MEASURE_SECONDS,
            "measurements": [m.__dict__ for m in rows],
            "ratios": ratios,
        },
    )
    print(f"bench expertise: results in {path}", flush=True)
