"""Session fixtures: the suite's own PostgreSQL and Temporal (never those of `make run`), a development PKI,
and helpers to call our servers over real mTLS sockets with minted tokens."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
import temporalio.client

from services.devstack import free_port
from services.devstack.mailsink import MailSink
from services.devstack.postgres import PostgresHandle, start_postgres
from services.devstack.temporal import TemporalHandle, start_temporal
from services.kit.migrate import apply_all
from services.kit.pki import DevPki, ensure_dev_pki
from services.kit.roles import OWNER, component_role, provision
from services.kit.settings import TemporalSettings
from services.kit.telemetry import configure_telemetry
from services.kit.temporal import connect_client
from services.kit.tokens import mint_token
from tests.support import (
    AUDIENCE,
    COMPONENTS,
    DB_PASSWORDS,
    ISSUER,
    PAYLOAD_KEYS,
    TEST_ESTABLISHMENTS,
    kit_settings,
    role_url,
)
from tests.support.stack import CaseStackFactory, SuiteServices

# `make chaos` and its scenarios' scale and figures (tests/support/chaos.py).
pytest_plugins = ["tests.support.chaos"]


_settled: set[str] = set()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """Settle the heap before each module's first test, once its fixtures are built.

    This one process hosts the whole hub (every service, worker and test client) and its heap grows with the
    suite. A full collection walks all of it and stops the event loop meanwhile: 1–2.5 s at the suite's
    half-million to two million objects, which the fuzzer saw as answers past its 5 s bound. A service
    process settles its heap once it serves (`services.kit.server.settle_heap`); here what the fixtures
    built is frozen the same way, after a young collection so that fresh garbage is not kept.
    """
    module = item.nodeid.split("::", 1)[0]
    if module not in _settled:
        _settled.add(module)
        gc.collect(1)
        gc.freeze()


@pytest.fixture(scope="session", autouse=True)
def _telemetry() -> None:
    configure_telemetry("tests", json_logs=False)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return ensure_dev_pki(
        tmp_path_factory.mktemp("pki"), components=COMPONENTS, establishments=TEST_ESTABLISHMENTS
    )


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresHandle]:
    """The suite's PostgreSQL: every connection gives a password, and the hub's roles exist
    (services/kit/roles.py)."""
    handle = start_postgres(tmp_path_factory.mktemp("pg") / "data", port=free_port(), fast=True)
    try:
        provision(handle.url_for("postgres"), "parcours", DB_PASSWORDS)
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def database_url(postgres: PostgresHandle) -> str:
    """Database `parcours` with every migration applied, as the migrations' owner role (not a superuser);
    the URL of that owner. Services built with `kit_settings` connect as their own roles instead."""
    url = role_url(postgres.url, OWNER)
    apply_all(url)
    return url


@pytest.fixture(scope="session")
async def pool(postgres: PostgresHandle, database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """An administrator's pool on that database (the superuser's): what tests use to set up and inspect
    rows directly. Services never get it (`role_pool`)."""
    created = await asyncpg.create_pool(postgres.url, min_size=1, max_size=10)
    assert created is not None
    try:
        yield created
    finally:
        await created.close()


RolePool = Callable[[str], Awaitable[asyncpg.Pool]]


@pytest.fixture(scope="session")
async def role_pool(database_url: str) -> AsyncIterator[RolePool]:
    """role_pool(component) → a pool on the suite's database as that component's own role, as the component
    opens it in production: the services in the tests run on these, so the grants are proven enough."""
    pools: dict[str, asyncpg.Pool] = {}
    lock = asyncio.Lock()

    async def get(component: str) -> asyncpg.Pool:
        role = component_role(component)
        async with lock:
            if role not in pools:
                created = await asyncpg.create_pool(role_url(database_url, role), min_size=1, max_size=10)
                assert created is not None
                pools[role] = created
            return pools[role]

    try:
        yield get
    finally:
        for created in pools.values():
            await created.close()


@pytest.fixture(scope="session")
def temporal() -> Iterator[TemporalHandle]:
    handle = start_temporal(None, port=free_port(), ui_port=None, headless=True)
    try:
        yield handle
    finally:
        handle.stop()


Minter = Callable[..., str]


@pytest.fixture(scope="session")
def mint(pki: DevPki) -> Minter:
    """mint(rpps=..., profession=..., specialty=..., roles=..., staff=..., ttl=...) → a signed token."""

    def _mint(
        *,
        rpps: str | None = None,
        staff: str | None = None,
        profession: str | None = "PROFESSION_PHYSICIAN",
        specialty: str | None = "SPECIALTY_GENERAL_MEDICINE",
        roles: Sequence[str] = (),
        region: str | None = None,
        ttl: timedelta = timedelta(hours=1),
    ) -> str:
        subject = f"8{rpps}" if rpps else f"staff:{staff or 'operator'}"
        return mint_token(
            signing_key_file=pki.signing_key_file,
            kid=pki.signing_kid,
            issuer=ISSUER,
            audience=AUDIENCE,
            subject=subject,
            profession=profession if rpps else None,
            specialty=specialty if rpps else None,
            roles=roles,
            region=region,
            ttl=ttl,
        )

    return _mint


@pytest.fixture(scope="session")
async def seeded_pool(pool: asyncpg.Pool) -> asyncpg.Pool:
    """The pool of a database holding the demo region."""
    from services.directory.seed import seed_demo

    await seed_demo(pool)
    return pool


@pytest.fixture(scope="session")
async def temporal_client(temporal: TemporalHandle) -> temporalio.client.Client:
    """The suite's one Temporal client, built as every Parcours component builds one (codec, tracing)."""
    return await connect_client(
        TemporalSettings(temporal_address=temporal.address, payload_keys=PAYLOAD_KEYS)
    )


@pytest.fixture(scope="session")
async def billing_address(
    pki: DevPki,
    database_url: str,
    role_pool: RolePool,
    directory_address: str,
    contracts_address: str,
) -> AsyncIterator[str]:
    """The real billing service (mTLS, tokens, audit), in-process on the suite's database as its own role;
    its address."""
    from services.billing.server import build
    from services.billing.settings import BillingSettings

    settings = BillingSettings(
        **kit_settings(  # type: ignore[arg-type]
            pki,
            database_url,
            "billing",
            directory_address=directory_address,
            contracts_address=contracts_address,
            # Coverage answers are checked against the contracts' version at most this often.
            contracts_cache_check_seconds=0.05,
        )
    )
    kit = await build(settings, await role_pool("billing"))
    await kit.start()
    await kit.set_serving(True)
    try:
        yield f"127.0.0.1:{kit.port}"
    finally:
        await kit.stop(0.5)


@pytest.fixture(scope="session")
async def contracts_address(
    pki: DevPki,
    database_url: str,
    role_pool: RolePool,
    temporal: TemporalHandle,
    temporal_client: temporalio.client.Client,
    directory_address: str,
) -> AsyncIterator[str]:
    """The real contracts service and its worker, in-process on the suite's database and Temporal (a task
    queue of their own); its address. Billing asks it whether an act is covered."""
    from tests.support.contracts import running_contracts

    pool = await role_pool("contracts")
    async with running_contracts(
        pki, database_url, pool, temporal_client, temporal.address, directory_address
    ) as address:
        yield address


@pytest.fixture(scope="session")
async def paca_follows_cnom(pki: DevPki, contracts_address: str) -> object:
    """Region 93 (Provence-Alpes-Côte d'Azur) follows the CNOM 2016 recommendation from today: a contract with
    the Ordre's visa for experimental, out-of-parcours or commercial telemedicine. Published once, through the
    API, by one of its officers (a version is never edited afterwards)."""
    from datetime import UTC, datetime

    from google.type import date_pb2
    from parcours.contracts.v1 import contracts_pb2, contracts_pb2_grpc

    from tests.support import component_channel, request_id

    token = mint_token(
        signing_key_file=pki.signing_key_file,
        kid=pki.signing_kid,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject="staff:paca",
        profession=None,
        specialty=None,
        roles=["ars_officer"],
        region="93",
    )
    today = datetime.now(UTC).date()
    async with component_channel(pki, contracts_address, "console") as channel:
        reply = await contracts_pb2_grpc.ContractServiceStub(channel).PublishPolicyVersion(
            contracts_pb2.PublishPolicyVersionRequest(
                request_id=request_id(),
                parent="regions/93",
                region_policy=contracts_pb2.RegionPolicy(
                    effective_date=date_pb2.Date(year=today.year, month=today.month, day=today.day),
                    profile=contracts_pb2.RegionPolicy.PROFILE_CNOM_2016,
                    note="Délibération du directeur général de l'ARS PACA",
                ),
            ),
            metadata=(("authorization", f"Bearer {token}"),),
        )
    return reply.region_policy


@pytest.fixture(scope="session")
async def directory_address(
    pki: DevPki, database_url: str, seeded_pool: asyncpg.Pool, role_pool: RolePool
) -> AsyncIterator[str]:
    """A running directory service (mTLS, tokens, audit) over the demo region, as its own role; its
    address."""
    from services.directory.server import build
    from services.directory.settings import DirectorySettings

    settings = DirectorySettings(**kit_settings(pki, database_url, "directory"))  # type: ignore[arg-type]
    kit = await build(settings, await role_pool("directory"))
    await kit.start()
    await kit.set_serving(True)
    try:
        yield f"127.0.0.1:{kit.port}"
    finally:
        await kit.stop(0.5)


@pytest.fixture
def mail_sink(tmp_path: Path) -> Iterator[MailSink]:
    """A real SMTP server (aiosmtpd) on a free port keeping what it receives in a Maildir, as `make run`'s."""
    sink = MailSink(tmp_path / "mail").start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
async def case_stack(
    pki: DevPki,
    database_url: str,
    seeded_pool: asyncpg.Pool,
    temporal_client: temporalio.client.Client,
    directory_address: str,
    billing_address: str,
    role_pool: RolePool,
) -> AsyncIterator[CaseStackFactory]:
    """case_stack(service, worker=True, settings={...}, worker_settings={...}, client=None) → a started case
    service (and worker) on a fresh task queue, stopped after the test (tests/support/stack.py)."""
    suite = SuiteServices(
        pki=pki,
        database_url=database_url,
        pool=seeded_pool,
        role_pool=role_pool,
        client=temporal_client,
        directory_address=directory_address,
        billing_address=billing_address,
    )
    async with AsyncExitStack() as exits:
        yield CaseStackFactory(suite, exits)
