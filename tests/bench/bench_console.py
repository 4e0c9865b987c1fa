"""The console's figures: the dashboard page as an officer loads it, and an export of 50,000 rows.

The directory, billing, expertise and scheduling servers run as their own processes (as in production), the
console in this process on a real socket, the development OpenID provider beside them; the officer is signed
in through it. Figures:

- dashboard page ("Pilotage", every chart and table, region 84 with a year of activity: 3,000 billed acts over
  the region's establishments, 1,200 téléexpertise requests and 360 schedule-months of teleconsultation slots
  over its GHTs, read through the three activity reports) loaded one after another as an officer does:
  p50 / p95 / max;
- an export of 50,000 inbox rows written as CSV and as XLSX (the formatting and the file; the rows come from
  the contracts service's ListCases, whose paging is measured with the inbox below);
- the inbox page at 50,000 cases (tab counters included) WAITS FOR THE CONTRACTS SERVICE, which holds the
  cases: it is reported as waiting, never estimated.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg
import httpx
from google.protobuf.timestamp_pb2 import Timestamp
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc
from parcours.contracts.v1 import contracts_pb2

from services.console import exports
from services.console.dashboards import last_months
from services.devstack import free_port
from services.devstack.oidc import CONSOLE_CLIENT_ID, RelyingParty, start_oidc_provider
from services.directory.seed import seed_demo
from tests.bench import BenchEnv
from tests.bench.bench_billing import start_contracts, start_process, wait_serving
from tests.billing.builders import teleconsultation, teleexpertise
from tests.console.conftest import CLIENT_SECRET, console_settings, run_console
from tests.console.support import sign_in
from tests.expertise.test_activity_report import request as expertise_request
from tests.support import PAYLOAD_KEYS, component_channel, repo_root

ACTS = 3000
TELEEXPERTISES = 1200
SCHEDULE_MONTHS = 360
PAGE_LOADS = 40
EXPORT_ROWS = 50_000
REGION_84 = ("420000017", "420000025", "420000033", "380000024", "690000019")
GHTS_84 = ("ght-loire", "ght-alpes-dauphine", "ght-val-rhone")
SPECIALTIES = ("DERMATOLOGY", "CARDIOLOGY", "GERIATRICS", "PSYCHIATRY")


def _summary(i: int, now: datetime) -> contracts_pb2.CaseSummary:
    due, updated = Timestamp(), Timestamp()
    due.FromDatetime(now + timedelta(days=i % 60 - 20))
    updated.FromDatetime(now - timedelta(hours=i % 500))
    return contracts_pb2.CaseSummary(
        name=f"arsContracts/{uuid.UUID(int=i)}",
        kind=contracts_pb2.CASE_KIND_ARS_CONTRACT,
        state="UNDER_REVIEW",
        title=f"Télésurveillance cardiaque, projet {i}",
        region="regions/84",
        departement="42",
        ght="ghts/ght-loire",
        promoter="establishments/420000017",
        current_step=contracts_pb2.CaseStep(
            step=contracts_pb2.STEP_ARS_REVIEW, claimant="staff/agent84" if i % 3 else "", due_time=due
        ),
        update_time=updated,
        version=3,
    )


def _export_figures() -> dict[str, float]:
    now = datetime.now(UTC)
    cases = [_summary(i, now) for i in range(EXPORT_ROWS)]
    started = time.perf_counter()
    rows = [exports.row_of(c, "84") for c in cases]
    formatted = time.perf_counter() - started
    started = time.perf_counter()
    csv_bytes = exports.to_csv(rows)
    csv_seconds = time.perf_counter() - started
    started = time.perf_counter()
    xlsx_bytes = exports.to_xlsx(rows)
    xlsx_seconds = time.perf_counter() - started
    return {
        "rows": EXPORT_ROWS,
        "rows_formatting_seconds": round(formatted, 2),
        "csv_seconds": round(csv_seconds, 2),
        "csv_mib": round(len(csv_bytes) / 2**20, 1),
        "xlsx_seconds": round(xlsx_seconds, 2),
        "xlsx_mib": round(len(xlsx_bytes) / 2**20, 1),
    }


async def _seed_billing(stub: billing_pb2_grpc.BillingServiceStub) -> None:
    now = datetime.now(UTC)
    semaphore = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        when = now - timedelta(days=(i * 7) % 360, hours=2)
        finess = REGION_84[i % len(REGION_84)]
        act = (
            teleexpertise(when, establishment=finess)
            if i % 2
            else teleconsultation(when, establishment=finess)
        )
        async with semaphore:
            await stub.RecordAct(
                billing_pb2.RecordActRequest(
                    request_id=str(uuid.uuid4()),
                    act_id=f"bench-console-{i}",
                    patient=f"patients/{uuid.uuid4()}",
                    act=act,
                )
            )

    await asyncio.gather(*(one(i) for i in range(ACTS)))


async def _seed_activity(pool: asyncpg.Pool) -> None:
    """A year of téléexpertise requests and teleconsultation slot tallies in region 84, written where the
    workflows and the daily slot pruning write them (the reports read those tables)."""
    now = datetime.now(UTC)
    semaphore = asyncio.Semaphore(8)
    states = ("COMPLETED", "COMPLETED", "COMPLETED", "EXPIRED", "CANCELLED")

    async def one(i: int) -> None:
        state = states[i % len(states)]
        async with semaphore:
            await expertise_request(
                pool,
                now - timedelta(days=(i * 3) % 360, hours=5),
                state,
                answer=timedelta(hours=1 + i % 30) if state == "COMPLETED" else None,
                breached=state == "EXPIRED" or i % 11 == 0,
                ght=GHTS_84[i % len(GHTS_84)],
                specialty=SPECIALTIES[i % len(SPECIALTIES)],
            )

    await asyncio.gather(*(one(i) for i in range(TELEEXPERTISES)))
    months = last_months(now.date())
    await pool.executemany(
        "INSERT INTO scheduling.slot_supply (schedule_id, month, region_code, ght_id, finess, specialty,"
        " offered, used) VALUES ($1, $2, '84', $3, $4, 'SPECIALTY_GENERAL_MEDICINE', $5, $6)",
        [
            (
                uuid.uuid4(),
                date(*months[i % len(months)], 1),
                GHTS_84[i % len(GHTS_84)],
                REGION_84[i % len(REGION_84)],
                80,
                40 + i % 40,
            )
            for i in range(SCHEDULE_MONTHS)
        ],
    )


async def main(env: BenchEnv) -> None:
    pool = await asyncpg.create_pool(env.database_url, min_size=1, max_size=10)
    assert pool is not None
    await seed_demo(pool)
    directory, directory_address, directory_log = start_process(env, "directory", {})
    # Billing serves once its contracts channel is up too (it asks contracts about acts needing a contract).
    contracts, contracts_address, contracts_log = start_contracts(env, directory_address)
    billing, billing_address, billing_log = start_process(
        env,
        "billing",
        {"PARCOURS_DIRECTORY_ADDRESS": directory_address, "PARCOURS_CONTRACTS_ADDRESS": contracts_address},
    )
    case_service = {
        "PARCOURS_DIRECTORY_ADDRESS": directory_address,
        "PARCOURS_TEMPORAL_ADDRESS": env.temporal_address,
        "PARCOURS_PAYLOAD_KEYS": PAYLOAD_KEYS,
    }
    expertise, expertise_address, expertise_log = start_process(env, "expertise", case_service)
    scheduling, scheduling_address, scheduling_log = start_process(env, "scheduling", case_service)
    channels = [component_channel(env.pki, a, "workflows") for a in (expertise_address, scheduling_address)]
    channel = component_channel(env.pki, billing_address, "workflows")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    provider = start_oidc_provider(
        port=free_port(),
        clients=[RelyingParty(CONSOLE_CLIENT_ID, CLIENT_SECRET, [f"{base}/connexion/retour"])],
        log_file=env.work_dir / "oidc.log",
    )
    try:
        await wait_serving(channel, billing, env)
        await wait_serving(channels[0], expertise, env)
        await wait_serving(channels[1], scheduling, env)
        print(
            f"bench console: recording {ACTS} acts, {TELEEXPERTISES} téléexpertises and {SCHEDULE_MONTHS} "
            "schedule-months of slots in region 84 ...",
            flush=True,
        )
        await _seed_billing(billing_pb2_grpc.BillingServiceStub(channel))
        await _seed_activity(pool)
        settings = console_settings(
            env.pki,
            env.database_url,
            port,
            provider.issuer,
            env.temporal_address,
            directory_address=directory_address,
            billing_address=billing_address,
            expertise_address=expertise_address,
            scheduling_address=scheduling_address,
        )
        async with run_console(settings, pool) as console, httpx.AsyncClient(timeout=60) as client:
            await sign_in(client, console.url, "agent84")
            timings = []
            for _ in range(PAGE_LOADS):
                started = time.perf_counter()
                page = await client.get(f"{console.url}/pilotage")
                timings.append((time.perf_counter() - started) * 1000)
                assert page.status_code == 200
                for key in ("teleexpertise", "reponses-teleexpertise", "teleconsultation", "facturation"):
                    assert f'id="c-{key}"' in page.text, key
        timings.sort()
        dashboard = {
            "loads": PAGE_LOADS,
            "acts_in_region": ACTS,
            "teleexpertises_in_region": TELEEXPERTISES,
            "schedule_months_in_region": SCHEDULE_MONTHS,
            "p50_ms": round(statistics.median(timings), 1),
            "p95_ms": round(timings[int(0.95 * (len(timings) - 1))], 1),
            "max_ms": round(timings[-1], 1),
        }
    finally:
        provider.stop()
        await channel.close()
        for opened in channels:
            await opened.close()
        await pool.close()
        for child, log in [
            (scheduling, scheduling_log),
            (expertise, expertise_log),
            (billing, billing_log),
            (contracts, contracts_log),
            (directory, directory_log),
        ]:
            child.terminate()
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
            log.close()  # type: ignore[attr-defined]
    export = await asyncio.to_thread(_export_figures)
    inbox = "waits for the contracts service (issue 10): the 50,000 cases live there"
    print(
        "\nconsole (2 cores shared by the console, billing, expertise, scheduling, directory, PostgreSQL and "
        "this client)\n"
    )
    print(
        f"  dashboard page, region 84 with {ACTS} acts, {TELEEXPERTISES} téléexpertises, {SCHEDULE_MONTHS} "
        f"schedule-months: p50 {dashboard['p50_ms']} ms, "
        f"p95 {dashboard['p95_ms']} ms, max {dashboard['max_ms']} ms ({PAGE_LOADS} loads)"
    )
    print(
        f"  export of {EXPORT_ROWS} rows: rows {export['rows_formatting_seconds']} s, "
        f"CSV {export['csv_seconds']} s ({export['csv_mib']} MiB), "
        f"XLSX {export['xlsx_seconds']} s ({export['xlsx_mib']} MiB)"
    )
    print(f"  inbox page at 50,000 cases: {inbox}")
    path = env.write_results("console", {"dashboard": dashboard, "export": export, "inbox": inbox})
    print(f"\nresults: {path.relative_to(repo_root())}")
