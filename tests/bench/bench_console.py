"""The console's figures at 50,000 contracts cases in region 84: the inbox page (tab counters included), the
dashboard page, and an export of the 50,000 rows.

The directory, contracts, billing, expertise and scheduling servers run as their own processes (as in
production), the console in this process on a real socket, the development OpenID provider beside them; the
officer is signed in through it. The 50,000 cases are written straight into the contracts schema (a bench's
shortcut: their workflows are not started, the pages read the projection only): 35,000 contracts under ARS
review (a third held by the officer, due from 20 days ago to 40 days ahead), 7,500 declarations awaiting
acknowledgement and 7,500 contracts in force (decided over the last two years, ending over the next 400 days).
Figures, pages loaded one after another as an officer does:

- inbox page ("à traiter", 50 rows and the five tab counters, then the overdue filter): p50 / p95 / max,
  target p95 ≤ 300 ms;
- dashboard page ("Pilotage", every chart and table: the contracts charts from GetCaseActivityReport, the
  activity charts over a year of activity: 3,000 billed acts, 1,200 téléexpertise requests and 360
  schedule-months of teleconsultation slots): p50 / p95 / max;
- an export of the 50,000 rows of "tous", as the officer starts it: from the click to the file ready (the
  console's background worker pages through ListCases and writes the CSV).
"""

from __future__ import annotations

import asyncio
import re
import statistics
import subprocess
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg
import httpx
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc

from services.console.dashboards import last_months
from services.devstack import free_port
from services.devstack.oidc import CONSOLE_CLIENT_ID, RelyingParty, start_oidc_provider
from services.directory.seed import seed_demo
from tests.bench import BenchEnv, shown
from tests.bench.bench_billing import start_contracts, start_process, wait_serving
from tests.billing.builders import teleconsultation, teleexpertise
from tests.console.conftest import CLIENT_SECRET, console_settings, run_console
from tests.console.support import csrf_of, sign_in
from tests.expertise.test_activity_report import request as expertise_request
from tests.support import PAYLOAD_KEYS, component_channel

ACTS = 3000
TELEEXPERTISES = 1200
SCHEDULE_MONTHS = 360
PAGE_LOADS = 40
REGION_84 = ("420000017", "420000025", "420000033", "380000024", "690000019")
GHTS_84 = ("ght-loire", "ght-alpes-dauphine", "ght-val-rhone")
SPECIALTIES = ("DERMATOLOGY", "CARDIOLOGY", "GERIATRICS", "PSYCHIATRY")


CASES = 50_000
SEED_CASES = """
INSERT INTO contracts.cases (
    case_id, kind, request_id, workflow_id, region, departement, ght, promoter, filer, creator, title,
    resource, start_state, state, version, step, step_role, claimant, claim_time, step_open_time, due_time,
    overdue, expire_time, closed, decider, decide_time, create_time, update_time)
SELECT id, kind, gen_random_uuid(),
       CASE kind WHEN 'ARS_CONTRACT' THEN 'ars-contract-' ELSE 'operator-declaration-' END || id,
       '84', '42', 'ght-loire', 'establishments/420000017', 'establishments/420000017',
       'staff/promoter-loire',
       'Dossier de banc d''essai ' || i, '\\x'::bytea, '{}'::jsonb, state, 3, step,
       CASE WHEN step = '' THEN '' ELSE 'ARS_OFFICER' END,
       CASE WHEN step <> '' AND i % 3 = 0 THEN 'staff/agent84' ELSE '' END,
       CASE WHEN step <> '' AND i % 3 = 0 THEN now() - interval '1 day' END,
       CASE WHEN step <> '' THEN created END,
       due, coalesce(due < now(), false),
       CASE WHEN state = 'ACTIVE' THEN now() + make_interval(days => 1 + i % 400) END,
       false,
       CASE WHEN state = 'ACTIVE' THEN 'staff/agent84' ELSE '' END,
       CASE WHEN state = 'ACTIVE' THEN created + make_interval(days => 10 + i % 80) END,
       created, now() - make_interval(hours => i % 500)
FROM (
    SELECT i, gen_random_uuid() AS id,
           CASE WHEN i % 20 < 14 THEN 'ARS_CONTRACT' WHEN i % 20 < 17 THEN 'OPERATOR_DECLARATION'
                ELSE 'ARS_CONTRACT' END AS kind,
           CASE WHEN i % 20 < 14 THEN 'UNDER_REVIEW' WHEN i % 20 < 17 THEN 'DECLARED'
                ELSE 'ACTIVE' END AS state,
           CASE WHEN i % 20 < 14 THEN 'ARS_REVIEW' WHEN i % 20 < 17 THEN 'ACKNOWLEDGEMENT'
                ELSE '' END AS step,
           CASE WHEN i % 20 < 17 THEN now() + make_interval(days => i % 60 - 20) END AS due,
           now() - make_interval(days => 100 + i % 600) AS created
    FROM generate_series(1, $1) AS i
) seeded
"""


def _percentiles(timings: list[float]) -> dict[str, float]:
    timings = sorted(timings)
    return {
        "p50_ms": round(statistics.median(timings), 1),
        "p95_ms": round(timings[int(0.95 * (len(timings) - 1))], 1),
        "max_ms": round(timings[-1], 1),
    }


async def _loads(client: httpx.AsyncClient, url: str, expect: str) -> dict[str, float]:
    timings = []
    for _ in range(PAGE_LOADS):
        started = time.perf_counter()
        page = await client.get(url)
        timings.append((time.perf_counter() - started) * 1000)
        assert page.status_code == 200, page.text[:500]
        assert expect in page.text, expect
    return _percentiles(timings)


async def _export(client: httpx.AsyncClient, base: str) -> dict[str, float]:
    """The officer exports "tous" (the 50,000 cases): seconds from the click to the file ready, its size."""
    links = re.compile(r'href="(/exports/[0-9a-f-]{36})"')
    earlier = set(links.findall((await client.get(f"{base}/exports")).text))
    form = (await client.get(f"{base}/dossiers?onglet=tous")).text
    started = time.perf_counter()
    launched = await client.post(
        f"{base}/dossiers/export", data={"csrf_token": csrf_of(form), "query": "onglet=tous", "format": "csv"}
    )
    assert launched.status_code == 303
    while True:
        done = set(links.findall((await client.get(f"{base}/exports")).text)) - earlier
        if done:
            break
        # A bench polls the page as the officer would; nothing here can be awaited instead.
        await asyncio.sleep(0.2)
    seconds = time.perf_counter() - started
    content = (await client.get(f"{base}{done.pop()}")).content
    rows = content.decode("utf-8-sig").count("\n") - 1
    assert rows == CASES, rows
    return {"rows": rows, "seconds": round(seconds, 2), "csv_mib": round(len(content) / 2**20, 1)}


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
    channels = [
        component_channel(env.pki, a, "workflows")
        for a in (expertise_address, scheduling_address, billing_address)
    ]
    contracts_channel = component_channel(env.pki, contracts_address, "billing")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    provider = start_oidc_provider(
        port=free_port(),
        clients=[RelyingParty(CONSOLE_CLIENT_ID, CLIENT_SECRET, [f"{base}/connexion/retour"])],
        log_file=env.work_dir / "oidc.log",
    )
    children = [
        (scheduling, scheduling_log),
        (expertise, expertise_log),
        (billing, billing_log),
        (contracts, contracts_log),
        (directory, directory_log),
    ]
    try:
        await wait_serving(contracts_channel, contracts, env)
        for channel, process in zip(channels, (expertise, scheduling, billing), strict=True):
            await wait_serving(channel, process, env)
        print(
            f"bench console: seeding {CASES} contracts cases, recording {ACTS} acts, {TELEEXPERTISES} "
            f"téléexpertises and {SCHEDULE_MONTHS} schedule-months of slots in region 84 ...",
            flush=True,
        )
        await pool.execute(SEED_CASES, CASES)
        await pool.execute("ANALYZE contracts.cases")
        await _seed_billing(billing_pb2_grpc.BillingServiceStub(channels[2]))
        await _seed_activity(pool)
        settings = console_settings(
            env.pki,
            env.database_url,
            port,
            provider.issuer,
            env.temporal_address,
            contracts_address=contracts_address,
            directory_address=directory_address,
            billing_address=billing_address,
            expertise_address=expertise_address,
            scheduling_address=scheduling_address,
        )
        async with run_console(settings, pool) as console, httpx.AsyncClient(timeout=120) as client:
            await sign_in(client, console.url, "agent84")
            inbox = await _loads(client, f"{console.url}/dossiers", 'id="page-suivante"')
            overdue = await _loads(
                client, f"{console.url}/dossiers?onglet=tous&en-retard=1", 'id="page-suivante"'
            )
            dashboard = await _loads(client, f"{console.url}/pilotage", 'id="c-etats"')
            export = await _export(client, console.url)
    finally:
        provider.stop()
        for opened in [*channels, contracts_channel]:
            await opened.close()
        await pool.close()
        for child, log in children:
            child.terminate()
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
            log.close()  # type: ignore[attr-defined]
    print(
        "\nconsole (2 cores shared by the console, contracts, billing, expertise, scheduling, directory, "
        f"PostgreSQL and this client), {CASES} contracts cases in region 84, {PAGE_LOADS} loads each\n"
    )
    for label, figures in (
        ("inbox page, « à traiter » with the tab counters", inbox),
        ("inbox page, every overdue case", overdue),
        ("dashboard page", dashboard),
    ):
        print(
            f"  {label}: p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms, max {figures['max_ms']} ms"
        )
    print(
        f"  export of {export['rows']} rows (CSV, {export['csv_mib']} MiB): {export['seconds']} s from the "
        "click to the file ready"
    )
    path = env.write_results(
        "console",
        {
            "cases": CASES,
            "loads": PAGE_LOADS,
            "inbox": inbox,
            "inbox_overdue": overdue,
            "dashboard": {
                **dashboard,
                "acts_in_region": ACTS,
                "teleexpertises_in_region": TELEEXPERTISES,
                "schedule_months_in_region": SCHEDULE_MONTHS,
            },
            "export": export,
        },
    )
    print(f"\nresults: {shown(path)}")
