"""The scheduling service: bookings beside a ceiling measured in the same run, slot search over a whole
region, and the lag from a booking to its workflow started.

The scheduling server runs as its own process, as in production (`python -m tests.bench.bench_scheduling
serve` is `python -m services.scheduling` plus one bench-only method, below), over mutual TLS, with its outbox
relay starting workflows on the bench's Temporal dev server; the directory runs as its own process too. The
client is this process: 32 calls in flight (closed loop) for a few seconds per measurement, after a warm-up.

- Ceiling: `parcours.bench.v1.CeilingService/InsertOne`, registered on the same server with the same access
  policy as BookAppointment (patient data, so audited): the same mTLS, interceptors (authentication, audit
  record, authorisation, validation) and pool, and one one-row INSERT. What BookAppointment adds to it is its
  own work: the caller's scope and the patient (directory, cached), the one-statement booking (appointment,
  history, outbox, request id, the exclusion constraint), the response.
- BookAppointment: each call books another free slot of the seeded region, for one patient the caller has
  just read (the visibility it asks the directory for is then kept for that caller, as after a search or a
  first booking: services/kit/directory.py).
- BookAppointment, another patient each call: the same, each for a patient this caller has not touched
  yet (seeded in the directory, known at the calling establishment), so every call also asks the directory
  on the caller's behalf (and the directory audits that read). Reported beside the first; the target is read
  on the first, as it was before the case kit, whose bench booked one patient too.
- SearchSlots: p50/p99 over a region of 5,000 practitioners with 4 weeks of availability (1.2 million slots)
  and 100,000 booked appointments, seeded with bulk SQL; the queries a front-end makes (a specialty in the
  region or in a GHT over a week or the whole horizon, a practitioner's agenda, a service type), 20 per page.
- CPU: the seconds each component of this bench (its client, servers, PostgreSQL and Temporal, by process
  id: not other work's processes of the same names) used during the ceiling and the booking loops (they
  share the 2 cores; the relay's workflow starts, capped by relay_max_starts_per_second, are part of the
  booking loop's cost), and per call.
- Lag: bookings at a sustained rate (open loop); for each, the time from its commit to the moment Temporal
  accepted its workflow's start (the outbox row marked done), both read from the database's clock.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
import psutil
from google.protobuf import descriptor_pb2, descriptor_pool, empty_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from parcours.options.v1 import options_pb2
from parcours.scheduling.v1 import scheduling_pb2, scheduling_pb2_grpc
from parcours.type.v1 import practice_pb2

from services.devstack import free_port, log_tail
from services.kit.pki import DevPki
from services.kit.tokens import mint_token
from services.scheduling import store
from tests.bench import BenchEnv
from tests.support import AUDIENCE, ISSUER, LOIRE, establishment_channel, process_env, repo_root

IN_FLIGHT = 32
WARMUP_SECONDS = 0.5
MEASURE_SECONDS = float(os.environ.get("PARCOURS_BENCH_SECONDS", "3"))
READY_TIMEOUT_SECONDS = 90.0
PRACTITIONERS = 5_000
WEEKS = 4
APPOINTMENTS = 100_000
COLD_PATIENTS = 20_000
SEARCHES = int(os.environ.get("PARCOURS_BENCH_SEARCHES", "400"))
LAG_RATE_PER_SECOND = float(os.environ.get("PARCOURS_BENCH_LAG_RATE", "25"))
LAG_SECONDS = float(os.environ.get("PARCOURS_BENCH_LAG_SECONDS", "8"))
PAYLOAD_KEYS = "k1:" + "A" * 43

# The demo region's establishments (region 84) and their GHTs; the seeded practitioners practise there.
ESTABLISHMENTS = (
    ("420000017", "ght-loire"),
    ("420000025", "ght-loire"),
    ("420000033", "ght-loire"),
    ("070000014", "ght-loire"),
    ("380000024", "ght-alpes-dauphine"),
    ("380000032", "ght-alpes-dauphine"),
    ("730000015", "ght-alpes-dauphine"),
    ("740000013", "ght-alpes-dauphine"),
    ("690000019", "ght-val-rhone"),
    ("690000027", "ght-val-rhone"),
    ("010000016", "ght-val-rhone"),
    ("260000011", "ght-val-rhone"),
)
SPECIALTIES = tuple(
    practice_pb2.Specialty.Name(v)
    for v in practice_pb2.Specialty.values()
    if v not in (practice_pb2.SPECIALTY_UNSPECIFIED, practice_pb2.SPECIALTY_NONE)
)
HALF_HOURS = [f"{h:02d}:{m:02d}" for h in (9, 10, 11, 14, 15, 16) for m in (0, 30)]

# --- the ceiling method, registered only in the bench's server process ------------------------------------

CEILING_SERVICE = "parcours.bench.v1.CeilingService"


def register_ceiling_descriptor() -> None:
    """A one-method service in the default descriptor pool, carrying BookAppointment's access policy, so
    that the kit's interceptors treat it exactly as they treat BookAppointment."""
    file = descriptor_pb2.FileDescriptorProto(
        name="parcours/bench/v1/ceiling.proto",
        package="parcours.bench.v1",
        dependency=["google/protobuf/empty.proto", "parcours/options/v1/options.proto"],
        syntax="proto3",
    )
    method = file.service.add(name="CeilingService").method.add(
        name="InsertOne", input_type=".google.protobuf.Empty", output_type=".google.protobuf.Empty"
    )
    book = scheduling_pb2.DESCRIPTOR.services_by_name["SchedulingService"].methods_by_name["BookAppointment"]
    method.options.Extensions[options_pb2.access].CopyFrom(book.GetOptions().Extensions[options_pb2.access])
    try:
        descriptor_pool.Default().FindServiceByName(CEILING_SERVICE)
    except KeyError:
        descriptor_pool.Default().Add(file)


async def serve_with_ceiling() -> None:
    """`python -m tests.bench.bench_scheduling serve`: the scheduling service plus the ceiling method."""
    from services.kit.server import Bound, ServiceBinding, open_channel, serve
    from services.kit.settings import load_settings
    from services.kit.temporal import connect_client
    from services.scheduling.server import _parts
    from services.scheduling.settings import SchedulingSettings

    register_ceiling_descriptor()
    settings = load_settings(SchedulingSettings)

    async def bind(pool: asyncpg.Pool) -> Bound:
        # As services.scheduling.server.run binds the service, plus the ceiling.
        directory = open_channel(settings, settings.directory_address)
        temporal = await connect_client(settings)
        bindings, relay, periodic = _parts(settings, pool, temporal, directory)

        async def insert_one(request: empty_pb2.Empty, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
            await pool.execute("INSERT INTO public.bench_ceiling (payload) VALUES ($1)", uuid.uuid4())
            return empty_pb2.Empty()

        handler = grpc.method_handlers_generic_handler(
            CEILING_SERVICE,
            {
                "InsertOne": grpc.unary_unary_rpc_method_handler(
                    insert_one,
                    request_deserializer=empty_pb2.Empty.FromString,
                    response_serializer=empty_pb2.Empty.SerializeToString,
                )
            },
        )
        ceiling = ServiceBinding(CEILING_SERVICE, lambda server: server.add_generic_rpc_handlers((handler,)))
        return Bound([*bindings, ceiling], channels=[directory], tasks=[relay, *periodic])

    await serve(settings, bind)


# --- measurements -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    name: str
    calls: int
    errors: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float


def summarise(name: str, latencies: list[float], errors: int, elapsed: float) -> Measurement:
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return Measurement(
        name=name,
        calls=len(latencies),
        errors=errors,
        seconds=round(elapsed, 3),
        per_second=round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        p50_ms=round(cuts[49] * 1000, 2),
        p99_ms=round(cuts[98] * 1000, 2),
    )


async def closed_loop(
    name: str,
    call: Callable[[int], Awaitable[object]],
    in_flight: int = IN_FLIGHT,
    seconds: float = MEASURE_SECONDS,
) -> Measurement:
    counter = iter(range(10**9))

    async def run(until: float, latencies: list[float] | None, errors: list[int]) -> None:
        while time.perf_counter() < until:
            started = time.perf_counter()
            try:
                await call(next(counter))
            except grpc.aio.AioRpcError:
                errors.append(1)
                continue
            if latencies is not None:
                latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(run(time.perf_counter() + WARMUP_SECONDS, None, []) for _ in range(in_flight)))
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    await asyncio.gather(*(run(started + seconds, latencies, errors) for _ in range(in_flight)))
    return summarise(name, latencies, len(errors), time.perf_counter() - started)


# --- the seeded region ------------------------------------------------------------------------------------


async def seed_region(pool: asyncpg.Pool) -> dict[str, float]:
    """5,000 schedules (region 84, 12 establishments, 3 GHTs, 20 specialties), weekday rules 09:00-12:00 and
    14:00-17:00 Europe/Paris in 30-minute follow-up slots over 4 weeks, and 100,000 booked appointments."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    await pool.execute(
        """
        INSERT INTO scheduling.schedules (
            schedule_id, rpps, profession, specialty, finess, ght_id, region_code, time_zone,
            booking_horizon_days, materialised_until)
        SELECT md5('bench-schedule-' || i)::uuid, (50000000000 + i)::text, 'PROFESSION_PHYSICIAN',
               ($2::text[])[1 + i % cardinality($2::text[])],
               ($3::text[])[1 + i % cardinality($3::text[])], ($4::text[])[1 + i % cardinality($4::text[])],
               '84', 'Europe/Paris', 28, current_date + 27
        FROM generate_series(1, $1::integer) AS i
        """,
        PRACTITIONERS,
        list(SPECIALTIES),
        [e[0] for e in ESTABLISHMENTS],
        [e[1] for e in ESTABLISHMENTS],
    )
    await pool.execute(
        """
        INSERT INTO scheduling.schedule_service_types (schedule_id, service_type, slot_duration)
        SELECT schedule_id, 'SERVICE_TYPE_FOLLOW_UP', interval '30 minutes' FROM scheduling.schedules
        """
    )
    await pool.execute(
        """
        INSERT INTO scheduling.availability_rules (rule_id, schedule_id, day_of_week, start_local, end_local,
                                                   service_type)
        SELECT gen_random_uuid(), sc.schedule_id, d, r.s, r.e, 'SERVICE_TYPE_FOLLOW_UP'
        FROM scheduling.schedules sc CROSS JOIN generate_series(1, 5) AS d
        CROSS JOIN (VALUES (time '09:00', time '12:00'), (time '14:00', time '17:00')) AS r(s, e)
        """
    )
    timings["schedules_and_rules_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    # A bulk load: the search indexes are dropped and rebuilt after (exactly as the migration defines them).
    indexes = await pool.fetch(
        """
        SELECT i.indexname, pg_get_indexdef(c.oid) AS definition FROM pg_indexes i
        JOIN pg_class c ON c.relname = i.indexname
        WHERE i.schemaname = 'scheduling' AND i.tablename = 'slots' AND i.indexname LIKE 'slots\\_%\\_idx'
        """
    )
    for index in indexes:
        await pool.execute(f'DROP INDEX scheduling."{index["indexname"]}"')
    # What the materialiser makes of those rules (wall-clock 09:00 read in Europe/Paris, DST included).
    await pool.execute(
        """
        INSERT INTO scheduling.slots (slot_id, schedule_id, rpps, finess, ght_id, region_code, specialty,
                                      time_zone, service_type, start_time, end_time, occupied, minimum_notice)
        SELECT gen_random_uuid(), sc.schedule_id, sc.rpps, sc.finess, sc.ght_id, sc.region_code, sc.specialty,
               sc.time_zone, 'SERVICE_TYPE_FOLLOW_UP', x.st, x.st + interval '30 minutes',
               tstzrange(x.st, x.st + interval '30 minutes'), interval '0'
        FROM scheduling.schedules sc
        CROSS JOIN generate_series(current_date + 1, current_date + $1::integer, interval '1 day') AS d(day)
        CROSS JOIN unnest($2::time[]) AS t(at)
        CROSS JOIN LATERAL (SELECT (d.day::date + t.at) AT TIME ZONE sc.time_zone AS st) AS x
        WHERE extract(isodow FROM d.day) < 6
        """,
        WEEKS * 7,
        [time_of(h) for h in HALF_HOURS],
    )
    async with pool.acquire() as conn:
        await conn.execute("SET maintenance_work_mem = '256MB'")
        for index in indexes:
            await conn.execute(index["definition"])
    timings["slots_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    await pool.execute(
        """
        INSERT INTO scheduling.appointments (
            appointment_id, slot_id, schedule_id, rpps, finess, ght_id, region_code, specialty, time_zone,
            service_type, start_time, end_time, occupied, status, claimed, patient_id, booked_by_finess,
            booked_by_ght, join_open_time, no_show_time)
        SELECT gen_random_uuid(), s.slot_id, s.schedule_id, s.rpps, s.finess, s.ght_id, s.region_code,
               s.specialty, s.time_zone, s.service_type, s.start_time, s.end_time, s.occupied, 'booked',
               tstzrange(now(), NULL), gen_random_uuid(), s.finess, s.ght_id,
               s.start_time - interval '15 minutes', s.start_time + interval '30 minutes'
        FROM scheduling.slots s TABLESAMPLE BERNOULLI (10) REPEATABLE (42)
        LIMIT $1
        """,
        APPOINTMENTS,
    )
    # Vacuumed and analysed now, so that autovacuum does not do it during the measurements.
    await pool.execute("VACUUM (ANALYZE) scheduling.slots, scheduling.appointments, scheduling.schedules")
    await pool.execute("CHECKPOINT")
    timings["appointments_s"] = round(time.perf_counter() - started, 1)
    return timings


async def seed_patients(pool: asyncpg.Pool, finess: str, count: int) -> list[str]:
    """`count` patients known at `finess` (a local IPP each), with valid temporary (NIA-style, 7…) numbers
    that no other bench uses, since `make bench` runs every bench on one database; their resource names."""
    rows = await pool.fetch(
        """
        WITH numbered AS (
            SELECT i, '78001' || '42' || lpad((1 + (i - 1) / 999)::text, 3, '0')
                       || lpad((1 + (i - 1) % 999)::text, 3, '0') AS first13
            FROM generate_series(1, $2::integer) AS i
        ), created AS (
            INSERT INTO directory.patients (
                patient_id, matricule, oid, birth_family_name, birth_given_names, birth_date, sex,
                birth_place_code, identity_status)
            SELECT gen_random_uuid(),
                   first13 || lpad((97 - first13::bigint % 97)::text, 2, '0'),
                   '1.2.250.1.213.1.4.8', 'BENCH', 'PATIENT', date '1980-01-15', 'SEX_MALE',
                   '42' || substr(first13, 8, 3), 'IDENTITY_STATUS_PROVISIONAL'
            FROM numbered
            RETURNING patient_id
        ), linked AS (
            INSERT INTO directory.patient_local_ids (finess, ipp, patient_id)
            SELECT $1, 'SCHED-BENCH-' || row_number() OVER (ORDER BY patient_id), patient_id FROM created
            RETURNING patient_id
        )
        SELECT patient_id FROM linked
        """,
        finess,
        count,
    )
    return [f"patients/{r['patient_id']}" for r in rows]


def time_of(text: str) -> Any:
    from datetime import time as time_

    hours, minutes = text.split(":")
    return time_(int(hours), int(minutes))


# --- processes --------------------------------------------------------------------------------------------


def spawn(env: BenchEnv, name: str, argv: list[str], extra: dict[str, str]) -> subprocess.Popen[bytes]:
    child_env = {**process_env(env.pki, name, component=name, database_url=env.database_url), **extra}
    log = (env.work_dir / f"{name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, *argv],
        env=child_env,
        cwd=repo_root(),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def wait_serving(env: BenchEnv, name: str, process: subprocess.Popen[bytes], address: str) -> None:
    async with establishment_channel(env.pki, address, LOIRE) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{log_tail(env.work_dir / f'{name}.log')}")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)  # a child process's readiness, polled
    raise RuntimeError(f"{name} did not serve in time:\n{log_tail(env.work_dir / f'{name}.log')}")


@dataclass(frozen=True)
class Components:
    """This bench's own processes, by component: other engineers' suites on the same machine run their own
    PostgreSQL, Temporal and services, which a match on process names alone would count too."""

    client: int
    directory: int
    scheduling: int
    postmaster: int
    temporal: int | None

    @classmethod
    async def find(cls, env: BenchEnv, pool: asyncpg.Pool, directory: int, scheduling: int) -> Components:
        backend = psutil.Process(int(await pool.fetchval("SELECT pg_backend_pid()")))
        port = env.temporal_address.rpartition(":")[2]
        temporal = None
        for process in psutil.process_iter(["name", "cmdline"]):
            command = process.info["cmdline"] or []
            if (process.info["name"] or "").startswith("temporal") and port in command:
                temporal = process.pid
        return cls(os.getpid(), directory, scheduling, backend.ppid(), temporal)


def cpu_seconds(components: Components) -> dict[str, float]:
    """CPU time used so far by each of this bench's components (2 cores shared by all of them): the client,
    the two servers, PostgreSQL's server with its backends, the Temporal dev server."""
    found: dict[str, float] = {}
    groups: list[tuple[str, int | None, bool]] = [
        ("bench client", components.client, False),
        ("directory server", components.directory, False),
        ("scheduling server", components.scheduling, False),
        ("postgres", components.postmaster, True),
        ("temporal", components.temporal, False),
    ]
    for component, pid, with_children in groups:
        if pid is None:
            continue
        try:
            root = psutil.Process(pid)
            processes = [root, *(root.children(recursive=True) if with_children else [])]
        except psutil.NoSuchProcess:
            continue
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            found[component] = found.get(component, 0.0) + times.user + times.system
    return found


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(v - before.get(k, 0.0), 2) for k, v in sorted(after.items())}


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def token(pki: DevPki) -> str:
    return mint_token(
        signing_key_file=pki.signing_key_file,
        kid=pki.signing_kid,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject="staff:bench-front-desk",
        profession=None,
        specialty=None,
        ttl=timedelta(hours=2),
    )


def stamp_in(days: float) -> Timestamp:
    found = Timestamp()
    found.FromSeconds(int(time.time() + days * 86400))
    return found


# --- the benchmark ----------------------------------------------------------------------------------------


async def main(env: BenchEnv) -> None:
    from services.directory.demo import DEMO_PATIENTS
    from services.directory.seed import seed_demo

    pool = await asyncpg.create_pool(
        env.database_url, min_size=2, max_size=4, server_settings={"timezone": "UTC"}
    )
    assert pool is not None
    processes: list[subprocess.Popen[bytes]] = []
    try:
        await seed_demo(pool)
        await pool.execute(
            "CREATE TABLE IF NOT EXISTS public.bench_ceiling ("
            "id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload uuid NOT NULL,"
            " created timestamptz NOT NULL DEFAULT now())"
        )
        print("bench scheduling: seeding 5,000 practitioners x 4 weeks, 100,000 appointments ...", flush=True)
        seed = await seed_region(pool)
        cold_patients = iter(await seed_patients(pool, LOIRE, COLD_PATIENTS))
        slot_count = await pool.fetchval("SELECT count(*) FROM scheduling.slots")
        print(f"  seeded {slot_count} slots in {seed}", flush=True)

        directory_port, scheduling_port = free_port(), free_port()
        directory = spawn(
            env,
            "directory",
            ["-m", "services.directory"],
            {"PARCOURS_DIRECTORY_GRPC_PORT": str(directory_port)},
        )
        processes.append(directory)
        await wait_serving(env, "directory", directory, f"127.0.0.1:{directory_port}")
        scheduling = spawn(
            env,
            "scheduling",
            ["-m", "tests.bench.bench_scheduling", "serve"],
            {
                "PARCOURS_SCHEDULING_GRPC_PORT": str(scheduling_port),
                "PARCOURS_DIRECTORY_ADDRESS": f"127.0.0.1:{directory_port}",
                "PARCOURS_TEMPORAL_ADDRESS": env.temporal_address,
                "PARCOURS_PAYLOAD_KEYS": PAYLOAD_KEYS,
            },
        )
        processes.append(scheduling)
        address = f"127.0.0.1:{scheduling_port}"
        await wait_serving(env, "scheduling", scheduling, address)

        channel = establishment_channel(env.pki, address, LOIRE)
        stub = scheduling_pb2_grpc.SchedulingServiceStub(channel)
        metadata = (("authorization", f"Bearer {token(env.pki)}"),)
        insert_one = channel.unary_unary(
            f"/{CEILING_SERVICE}/InsertOne",
            request_serializer=empty_pb2.Empty.SerializeToString,
            response_deserializer=empty_pb2.Empty.FromString,
        )
        patient = f"patients/{DEMO_PATIENTS[0].patient_id}"  # known at CH des Monts du Forez (GHT Loire)
        free = [
            f"slots/{r['slot_id']}"
            for r in await pool.fetch(
                """
                SELECT s.slot_id FROM scheduling.slots s
                WHERE s.start_time > now() + interval '1 day'
                  AND NOT EXISTS (SELECT 1 FROM scheduling.appointments a WHERE a.slot_id = s.slot_id)
                ORDER BY md5(s.slot_id::text) LIMIT 60000
                """
            )
        ]
        slots = iter(free)

        async def ceiling(_: int) -> None:
            await insert_one(empty_pb2.Empty(), metadata=metadata)

        async def booking(_: int) -> None:
            await stub.BookAppointment(
                scheduling_pb2.BookAppointmentRequest(
                    request_id=str(uuid.uuid4()), slot=next(slots), patient=patient
                ),
                metadata=metadata,
            )

        async def booking_cold(_: int) -> None:
            await stub.BookAppointment(
                scheduling_pb2.BookAppointmentRequest(
                    request_id=str(uuid.uuid4()), slot=next(slots), patient=next(cold_patients)
                ),
                metadata=metadata,
            )

        components = await Components.find(env, pool, directory.pid, scheduling.pid)
        before = cpu_seconds(components)
        ceiling_m = await closed_loop("ceiling: one-row INSERT, same stack", ceiling)
        during_ceiling = cpu_seconds(components)
        started_before = await started_workflows(pool)
        booking_m = await closed_loop("BookAppointment", booking)
        cpu = {
            "ceiling": cpu_delta(before, during_ceiling),
            "booking": cpu_delta(during_ceiling, cpu_seconds(components)),
        }
        # Reported, not measured differently: what each call cost every process inside its loop (warm-up
        # included, as in the CPU seconds), and how many workflow starts the relay landed in the booking loop
        # (capped by relay_max_starts_per_second, so Temporal's share per booking follows the booking rate).
        cpu_ms = {
            "ceiling": per_call_ms(cpu["ceiling"], ceiling_m),
            "booking": per_call_ms(cpu["booking"], booking_m),
        }
        starts_in_loop = await started_workflows(pool) - started_before
        drained_from = cpu_seconds(components)
        drain = await drain_outbox(pool)
        # What one workflow start costs each process, from the relay's catching up alone (no bookings then).
        drain["cpu_ms_per_start"] = per_start_ms(cpu_delta(drained_from, cpu_seconds(components)), drain)
        # The same from an empty outbox, each booking for a patient the caller has not touched yet; then the
        # outbox drained again before the ceiling is measured a second time.
        cold_from = cpu_seconds(components)
        cold_m = await closed_loop("BookAppointment, another patient each call", booking_cold)
        cpu["booking_cold"] = cpu_delta(cold_from, cpu_seconds(components))
        cpu_ms["booking_cold"] = per_call_ms(cpu["booking_cold"], cold_m)
        await drain_outbox(pool)
        ceiling_again = await closed_loop("ceiling again (outbox drained)", ceiling)

        search_m, search_cpu_ms = await search_latencies(stub, metadata, components)
        lag = await booking_lag(stub, metadata, slots, patient, pool)

        # The ceiling is measured before and after the bookings (the outbox drained): the ratio is to their
        # mean.
        ceiling_mean = (ceiling_m.per_second + ceiling_again.per_second) / 2
        ratio = booking_m.per_second / ceiling_mean
        cold_ratio = cold_m.per_second / ceiling_mean
        rows = [ceiling_m, booking_m, cold_m, ceiling_again, *search_m]
        print(
            table(
                rows,
                {
                    "BookAppointment / ceiling (target >= 0.6)": ratio,
                    "the same, another patient each call": cold_ratio,
                },
            )
        )
        print(
            f"booking -> workflow started at {lag['rate_per_second']:.0f}/s for {LAG_SECONDS:.0f} s: "
            f"p50 {lag['p50_ms']:.0f} ms, p99 {lag['p99_ms']:.0f} ms, max {lag['max_ms']:.0f} ms, "
            f"{lag['started']}/{lag['booked']} started"
        )
        path = env.write_results(
            "scheduling",
            {
                "seed": {
                    "practitioners": PRACTITIONERS,
                    "weeks": WEEKS,
                    "slots": slot_count,
                    "appointments": APPOINTMENTS,
                    **seed,
                },
                "in_flight": IN_FLIGHT,
                "measurements": [asdict(m) for m in rows],
                "booking_to_ceiling_ratio": round(ratio, 3),
                "booking_another_patient_to_ceiling_ratio": round(cold_ratio, 3),
                "search_p99_target_ms": 25,
                "lag": lag,
                "relay_backlog": drain,
                "cpu_seconds": cpu,
                "cpu_ms_per_call": cpu_ms,
                "search_cpu_ms_per_call": search_cpu_ms,
                "workflow_starts_during_booking_loop": starts_in_loop,
            },
        )
        print(
            f"relay backlog after the closed loop: {drain['workflows']} workflows started in "
            f"{drain['seconds']} s ({drain['per_second']:.0f}/s); CPU ms per start: "
            + ", ".join(f"{k} {v:.2f}" for k, v in drain["cpu_ms_per_start"].items())
        )
        for phase, used in cpu.items():
            print(
                f"CPU seconds during the {phase} loop: " + ", ".join(f"{k} {v:.1f}" for k, v in used.items())
            )
        for phase, used in cpu_ms.items():
            print(f"CPU ms per {phase} call: " + ", ".join(f"{k} {v:.2f}" for k, v in used.items()))
        for phase, used in search_cpu_ms.items():
            print(f"CPU ms per search, {phase}: " + ", ".join(f"{k} {v:.2f}" for k, v in used.items()))
        print(f"workflow starts relayed during the booking loop: {starts_in_loop}")
        print(f"written to {path}")
    finally:
        for process in reversed(processes):
            stop(process)
        await pool.close()


# The query shapes of search_latencies(), reported one by one as well (the tail of the mix is one of them or
# the machine's other load; the per-shape figures say which).
SEARCH_SHAPES = (
    "region+specialty, horizon",
    "region+specialty, a week",
    "GHT+specialty, from day",
    "practitioner's agenda",
    "region+service type, from day",
)


async def search_latencies(
    stub: scheduling_pb2_grpc.SchedulingServiceStub,
    metadata: tuple[tuple[str, str], ...],
    components: Components,
) -> tuple[list[Measurement], dict[str, dict[str, float]]]:
    """What front-ends ask, at random: a specialty in the region (this week or the whole horizon), in a GHT,
    a practitioner's agenda, with a service type. Each round is followed by its figures per query shape; and
    what a search cost each process in each round (its CPU seconds in the round, warm-up excluded, over its
    calls)."""
    rng = random.Random(7)
    ghts = sorted({g for _, g in ESTABLISHMENTS})

    def request() -> tuple[int, scheduling_pb2.SearchSlotsRequest]:
        kind = rng.randrange(5)
        specialty = practice_pb2.Specialty.Value(rng.choice(SPECIALTIES))
        start = rng.uniform(0, 21)
        if kind == 0:
            return kind, scheduling_pb2.SearchSlotsRequest(
                specialty=specialty, region="regions/84", page_size=20
            )
        if kind == 1:
            return kind, scheduling_pb2.SearchSlotsRequest(
                specialty=specialty,
                region="regions/84",
                start_time=stamp_in(start),
                end_time=stamp_in(start + 7),
                page_size=20,
            )
        if kind == 2:
            return kind, scheduling_pb2.SearchSlotsRequest(
                specialty=specialty, ght=f"ghts/{rng.choice(ghts)}", start_time=stamp_in(start), page_size=20
            )
        if kind == 3:
            return kind, scheduling_pb2.SearchSlotsRequest(
                practitioner=f"practitioners/{50000000000 + rng.randint(1, PRACTITIONERS)}", page_size=20
            )
        return kind, scheduling_pb2.SearchSlotsRequest(
            region="regions/84",
            service_type=scheduling_pb2.SERVICE_TYPE_FOLLOW_UP,
            start_time=stamp_in(start),
            page_size=20,
        )

    found: list[Measurement] = []
    cpu_ms: dict[str, dict[str, float]] = {}
    for in_flight in (1, 8):
        for _ in range(20):  # warm-up
            await stub.SearchSlots(request()[1], metadata=metadata)
        queue = [request() for _ in range(SEARCHES)]
        before = cpu_seconds(components)
        overall, shapes = await search_round(stub, metadata, queue, in_flight)
        used = cpu_delta(before, cpu_seconds(components))
        cpu_ms[f"{in_flight} in flight"] = {
            k: round(v * 1000 / overall.calls, 2) if overall.calls else 0.0 for k, v in used.items()
        }
        found += [overall, *shapes]
    return found, cpu_ms


def per_call_ms(used: dict[str, float], loop: Measurement) -> dict[str, float]:
    """CPU milliseconds per call of each component: its CPU seconds in the loop (warm-up included) over the
    calls the loop made at its measured rate over the same time."""
    calls = loop.per_second * (loop.seconds + WARMUP_SECONDS)
    return {k: round(v * 1000 / calls, 2) if calls else 0.0 for k, v in used.items()}


def per_start_ms(used: dict[str, float], drain: dict[str, Any]) -> dict[str, float]:
    started = drain["workflows"]
    return {k: round(v * 1000 / started, 2) if started else 0.0 for k, v in used.items()}


async def started_workflows(pool: asyncpg.Pool) -> int:
    """Outbox commands the relay has sent so far (each booking's workflow start is one)."""
    return int(await pool.fetchval("SELECT count(*) FROM scheduling.outbox WHERE done_time IS NOT NULL"))


async def drain_outbox(pool: asyncpg.Pool) -> dict[str, Any]:
    """Wait for the relay to start every booking's workflow; how many it had left, and how fast it went."""
    pending = await store.OUTBOX.pending(pool)
    started = time.perf_counter()
    while await store.OUTBOX.pending(pool):  # noqa: ASYNC110 (another process's progress: polled)
        await asyncio.sleep(0.1)
    seconds = time.perf_counter() - started
    return {
        "workflows": pending,
        "seconds": round(seconds, 1),
        "per_second": round(pending / seconds, 1) if seconds else 0.0,
    }


async def search_round(
    stub: scheduling_pb2_grpc.SchedulingServiceStub,
    metadata: tuple[tuple[str, str], ...],
    queue: list[tuple[int, scheduling_pb2.SearchSlotsRequest]],
    in_flight: int,
) -> tuple[Measurement, list[Measurement]]:
    """The queue's searches, `in_flight` at a time: the round's figures, then the same calls per shape (their
    calls/s is that shape's share of the round's rate)."""
    latencies: list[float] = []
    by_shape: dict[int, list[float]] = {k: [] for k in range(len(SEARCH_SHAPES))}
    errors = 0

    async def worker() -> None:
        nonlocal errors
        while queue:
            kind, given = queue.pop()
            started = time.perf_counter()
            try:
                reply = await stub.SearchSlots(given, metadata=metadata)
                assert reply.slots
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            by_shape[kind].append(latencies[-1])

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    shapes = [
        summarise(f"  {SEARCH_SHAPES[k]} ({in_flight} in flight)", found, 0, elapsed)
        for k, found in by_shape.items()
    ]
    return summarise(f"SearchSlots, {in_flight} in flight", latencies, errors, elapsed), shapes


async def booking_lag(
    stub: scheduling_pb2_grpc.SchedulingServiceStub,
    metadata: tuple[tuple[str, str], ...],
    slots: Any,
    patient: str,
    pool: asyncpg.Pool,
) -> dict[str, float]:
    """Bookings at a steady rate (open loop); the lag of each from its commit to its workflow started."""
    names: list[str] = []
    tasks: list[asyncio.Task[Any]] = []

    async def book(request: scheduling_pb2.BookAppointmentRequest) -> scheduling_pb2.BookAppointmentResponse:
        reply: scheduling_pb2.BookAppointmentResponse = await stub.BookAppointment(request, metadata=metadata)
        return reply

    interval = 1 / LAG_RATE_PER_SECOND
    started = time.perf_counter()
    for i in range(int(LAG_RATE_PER_SECOND * LAG_SECONDS)):
        await asyncio.sleep(max(0.0, started + i * interval - time.perf_counter()))  # the arrival schedule
        request = scheduling_pb2.BookAppointmentRequest(
            request_id=str(uuid.uuid4()), slot=next(slots), patient=patient
        )
        tasks.append(asyncio.create_task(book(request)))
    for reply in await asyncio.gather(*tasks):
        names.append(reply.appointment.name.removeprefix("appointments/"))
    ids = [uuid.UUID(n) for n in names]
    rows: list[Any] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = await pool.fetch(
            """
            SELECT extract(epoch FROM o.done_time - a.create_time) * 1000 AS lag_ms
            FROM scheduling.outbox o JOIN scheduling.appointments a ON a.appointment_id = o.case_id
            WHERE o.case_id = ANY($1::uuid[]) AND o.command = 'start' AND o.done_time IS NOT NULL
            """,
            ids,
        )
        if len(rows) == len(ids):
            break
        await asyncio.sleep(0.2)  # the relay's progress, polled
    lags = sorted(float(r["lag_ms"]) for r in rows)
    cuts = statistics.quantiles(lags, n=100) if len(lags) >= 2 else [lags[0] if lags else 0.0] * 99
    return {
        "rate_per_second": LAG_RATE_PER_SECOND,
        "seconds": LAG_SECONDS,
        "booked": len(ids),
        "started": len(rows),
        "p50_ms": round(cuts[49], 1),
        "p99_ms": round(cuts[98], 1),
        "max_ms": round(lags[-1], 1) if lags else 0.0,
    }


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


if __name__ == "__main__" and sys.argv[1:] == ["serve"]:
    if os.environ.get("BENCH_PROFILE"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            asyncio.run(serve_with_ceiling())
        finally:
            profiler.disable()
            profiler.dump_stats(os.environ["BENCH_PROFILE"])
    else:
        asyncio.run(serve_with_ceiling())
