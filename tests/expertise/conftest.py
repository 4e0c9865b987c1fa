"""The expertise service and its teleexpertise worker over real gRPC (mTLS), PostgreSQL and Temporal.

Every test gets its own task queue (so its cases run on its own worker), a service built on it, and fresh
directory patients (so billing's yearly quota, counted per patient, starts from zero in every test). The
directory and billing services run in-process for the whole session, on the suite's database.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeVar

import asyncpg
import grpc
import pytest
from google.type import date_pb2
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc
from parcours.expertise.v1 import expertise_pb2, expertise_pb2_grpc
from temporalio.client import Client, WorkflowHandle

from services.devstack.temporal import TemporalHandle
from services.directory.identifiers import nir_key
from services.expertise.models import CaseResult
from services.expertise.server import build
from services.expertise.settings import ExpertiseSettings
from services.kit.pki import DevPki
from services.kit.server import open_channel
from tests.conftest import Minter, RolePool
from tests.support import LOIRE, PAYLOAD_KEYS, bearer, establishment_channel, kit_settings, request_id
from workflows.teleexpertise.worker import TeleexpertiseWorkerSettings
from workflows.teleexpertise.worker import build as build_worker
from workflows.teleexpertise.workflows import TeleexpertiseWorkflow

# Demo practitioners (services/directory/demo.py).
GP = "10000000101"  # GP at 420000025, GHT Loire (calls through 420000017)
GP_DAUPHINE = "10000000501"  # GP at 380000032, GHT Alpes-Dauphiné (no dermatology pool of its own)
DERM_LOIRE = "10000002001"  # the GHT Loire dermatology pool; backup of the region's
DERM_DAUPHINE = "10000002101"  # region 84 dermatology pool (at 380000024); backup of GHT Loire's
DERM_VAL_RHONE = "10000002201"  # region 84 dermatology pool (at 690000019)
CARDIO_LOIRE = "10000001801"  # cardiologist in GHT Loire: in no dermatology pool
NURSE_LOIRE = "10000004501"  # nurse at 420000025
PSYCHOLOGIST = "10000009601"  # not in the directory: only the token says psychologist

TEST_NIR_OID = "1.2.250.1.213.1.4.10"

T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]


def service_settings(
    pki: DevPki,
    database_url: str,
    temporal_address: str,
    directory_address: str,
    task_queue: str,
    **overrides: Any,
) -> ExpertiseSettings:
    values: dict[str, Any] = {
        **kit_settings(pki, database_url, "expertise"),
        "temporal_address": temporal_address,
        "payload_keys": PAYLOAD_KEYS,
        "directory_address": directory_address,
        "teleexpertise_task_queue": task_queue,
        # Crashed-worker tests wait for this before the activity is retried elsewhere.
        "teleexpertise_activity_timeout": 3,
    }
    values.update(overrides)
    return ExpertiseSettings(**values)


def worker_settings(
    pki: DevPki,
    database_url: str,
    temporal_address: str,
    directory_address: str,
    billing_address: str,
    task_queue: str,
) -> TeleexpertiseWorkerSettings:
    return TeleexpertiseWorkerSettings(
        **kit_settings(pki, database_url, "workflows"),  # type: ignore[arg-type]
        temporal_address=temporal_address,
        payload_keys=PAYLOAD_KEYS,
        directory_address=directory_address,
        billing_address=billing_address,
        teleexpertise_task_queue=task_queue,
        teleexpertise_sticky_timeout_seconds=2.0,
    )


@dataclass
class Stack:
    """One test's expertise service (and, unless asked otherwise, its in-process worker)."""

    pki: DevPki
    address: str
    task_queue: str
    settings: ExpertiseSettings
    client: Client
    mint: Minter
    # The suite's administrator pool (tests inspect rows with it) and the service's own role's pool.
    pool: asyncpg.Pool
    service_pool: asyncpg.Pool
    directory_address: str
    billing_address: str
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    def stub(self, finess: str = LOIRE) -> expertise_pb2_grpc.ExpertiseServiceStub:
        if finess not in self._channels:
            self._channels[finess] = establishment_channel(self.pki, self.address, finess)
        return expertise_pb2_grpc.ExpertiseServiceStub(self._channels[finess])

    def token(self, rpps: str, **claims: Any) -> Metadata:
        return bearer(self.mint(rpps=rpps, **claims))

    def as_(self, rpps: str, finess: str = LOIRE, **claims: Any) -> Actor:
        return Actor(rpps=rpps, stub=self.stub(finess), metadata=self.token(rpps, **claims))

    def handle(self, name: str) -> WorkflowHandle[Any, CaseResult]:
        """The case's workflow, whose result (awaited) says how it ended, billing included."""
        return self.client.get_workflow_handle_for(
            TeleexpertiseWorkflow.run, f"teleexpertise-{name.removeprefix('teleexpertiseRequests/')}"
        )

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


@dataclass
class Actor:
    """A practitioner calling the service through an establishment's information system."""

    rpps: str
    stub: expertise_pb2_grpc.ExpertiseServiceStub
    metadata: Metadata

    @property
    def name(self) -> str:
        return f"practitioners/{self.rpps}"

    async def create(self, **fields: Any) -> expertise_pb2.TeleexpertiseRequest:
        reply = await self.stub.CreateTeleexpertiseRequest(
            expertise_pb2.CreateTeleexpertiseRequestRequest(
                request_id=request_id(), teleexpertise_request=request_input(**fields)
            ),
            metadata=self.metadata,
        )
        return reply.teleexpertise_request

    async def get(self, name: str) -> expertise_pb2.TeleexpertiseRequest:
        reply = await self.stub.GetTeleexpertiseRequest(
            expertise_pb2.GetTeleexpertiseRequestRequest(name=name), metadata=self.metadata
        )
        return reply.teleexpertise_request

    async def accept(self, name: str) -> expertise_pb2.TeleexpertiseRequest:
        reply = await self.stub.AcceptTeleexpertiseRequest(
            expertise_pb2.AcceptTeleexpertiseRequestRequest(request_id=request_id(), name=name),
            metadata=self.metadata,
        )
        return reply.teleexpertise_request

    async def decline(
        self, name: str, reason: str = "hors de mon champ"
    ) -> expertise_pb2.TeleexpertiseRequest:
        reply = await self.stub.DeclineTeleexpertiseRequest(
            expertise_pb2.DeclineTeleexpertiseRequestRequest(
                request_id=request_id(), name=name, reason=reason
            ),
            metadata=self.metadata,
        )
        return reply.teleexpertise_request

    async def hand_back(self, name: str, reason: str = "absent") -> expertise_pb2.TeleexpertiseRequest:
        reply = await self.stub.HandBackTeleexpertiseRequest(
            expertise_pb2.HandBackTeleexpertiseRequestRequest(
                request_id=request_id(), name=name, reason=reason
            ),
            metadata=self.metadata,
        )
        return reply.teleexpertise_request

    async def cancel(self, name: str, reason: str = "plus nécessaire") -> expertise_pb2.TeleexpertiseRequest:
        reply = await self.stub.CancelTeleexpertiseRequest(
            expertise_pb2.CancelTeleexpertiseRequestRequest(
                request_id=request_id(), name=name, reason=reason
            ),
            metadata=self.metadata,
        )
        return reply.teleexpertise_request

    async def ask(self, name: str, text: str) -> expertise_pb2.TeleexpertiseRequest:
        reply = await self.stub.AskTeleexpertiseQuestion(
            expertise_pb2.AskTeleexpertiseQuestionRequest(request_id=request_id(), name=name, text=text),
            metadata=self.metadata,
        )
        return reply.teleexpertise_request

    async def answer(self, name: str, text: str) -> expertise_pb2.TeleexpertiseRequest:
        reply = await self.stub.AnswerTeleexpertiseQuestion(
            expertise_pb2.AnswerTeleexpertiseQuestionRequest(request_id=request_id(), name=name, text=text),
            metadata=self.metadata,
        )
        return reply.teleexpertise_request

    async def report(
        self, name: str, summary: str = "Lésion bénigne.", **fields: Any
    ) -> expertise_pb2.TeleexpertiseRequest:
        reply = await self.stub.SubmitTeleexpertiseReport(
            expertise_pb2.SubmitTeleexpertiseReportRequest(
                request_id=request_id(),
                name=name,
                report=expertise_pb2.ReportInput(summary=summary, **fields),
            ),
            metadata=self.metadata,
        )
        return reply.teleexpertise_request

    async def notifications(self, name: str = "") -> list[expertise_pb2.Notification]:
        reply = await self.stub.ListTeleexpertiseNotifications(
            expertise_pb2.ListTeleexpertiseNotificationsRequest(teleexpertise_request=name, page_size=500),
            metadata=self.metadata,
        )
        return list(reply.notifications)

    async def events(self, name: str) -> list[expertise_pb2.Event]:
        reply = await self.stub.ListTeleexpertiseEvents(
            expertise_pb2.ListTeleexpertiseEventsRequest(parent=name, page_size=500), metadata=self.metadata
        )
        return list(reply.events)


def request_input(**fields: Any) -> expertise_pb2.TeleexpertiseRequestInput:
    """A well-formed request (dermatology, routine, consent given) with fields overridden."""
    values: dict[str, Any] = {
        "patient_consent": True,
        "question": "Lésion pigmentée du dos évolutive : exérèse ?",
        "clinical_context": "Patient de 58 ans, lésion de 8 mm apparue il y a 6 mois, asymétrique.",
        "urgency": expertise_pb2.URGENCY_ROUTINE,
    }
    if "expert" not in fields:
        values["specialty"] = fields.pop("specialty", 4)  # SPECIALTY_DERMATOLOGY
    values.update(fields)
    return expertise_pb2.TeleexpertiseRequestInput(**values)


async def eventually(
    probe: Callable[[], Awaitable[T]], until: Callable[[T], bool], within: float = 20.0
) -> T:
    """Await a condition a timer brings about (a reminder, an escalation, a breach): poll the API for it."""
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


@pytest.fixture
def new_patient(pki: DevPki, directory_address: str, mint: Minter) -> Callable[..., Awaitable[str]]:
    """new_patient(finess=LOIRE, rpps=GP) → `patients/{id}` of a fresh patient known at that establishment."""
    rng = random.Random()

    async def create(finess: str = LOIRE, rpps: str = GP) -> str:
        sex = rng.choice(["1", "2"])
        born = date(rng.randint(1935, 2005), rng.randint(1, 12), rng.randint(1, 28))
        place = f"42{rng.randint(1, 999):03d}"
        first13 = f"{sex}{born.year % 100:02d}{born.month:02d}{place}{rng.randint(1, 999):03d}"
        async with establishment_channel(pki, directory_address, finess) as channel:
            reply = await directory_pb2_grpc.DirectoryServiceStub(channel).CreatePatient(
                directory_pb2.CreatePatientRequest(
                    request_id=request_id(),
                    ins=directory_pb2.InsIdentityInput(
                        matricule=first13 + nir_key(first13),
                        oid=TEST_NIR_OID,
                        birth_family_name="ESSAI",
                        birth_given_names="CAMILLE",
                        birth_date=date_pb2.Date(year=born.year, month=born.month, day=born.day),
                        sex=directory_pb2.SEX_MALE if sex == "1" else directory_pb2.SEX_FEMALE,
                        birth_place_code=place,
                    ),
                    identity_status=directory_pb2.IDENTITY_STATUS_QUALIFIED,
                    local_identifier=directory_pb2.LocalIdentifier(
                        establishment=f"establishments/{finess}", ipp=f"T-{uuid.uuid4().hex[:12]}"
                    ),
                ),
                metadata=bearer(mint(rpps=rpps)),
            )
        return str(reply.patient.name)

    return create


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack(
    pki: DevPki,
    database_url: str,
    seeded_pool: asyncpg.Pool,
    temporal: TemporalHandle,
    temporal_client: Client,
    directory_address: str,
    billing_address: str,
    mint: Minter,
    role_pool: RolePool,
) -> AsyncIterator[StackFactory]:
    """make_stack(worker=True, **settings) → a started service (and worker) on a fresh task queue."""
    service_pool = await role_pool("expertise")
    async with AsyncExitStack() as exits:

        async def make(*, worker: bool = True, **overrides: Any) -> Stack:
            task_queue = f"teleexpertise-test-{uuid.uuid4()}"
            settings = service_settings(
                pki, database_url, temporal.address, directory_address, task_queue, **overrides
            )
            directory = open_channel(settings, directory_address)
            exits.push_async_callback(directory.close)
            runtime = await build(settings, service_pool, temporal=temporal_client, directory=directory)
            await runtime.start()
            exits.push_async_callback(runtime.stop, 0.5)
            stack = Stack(
                pki=pki,
                address=f"127.0.0.1:{runtime.port}",
                task_queue=task_queue,
                settings=settings,
                client=temporal_client,
                mint=mint,
                pool=seeded_pool,
                service_pool=service_pool,
                directory_address=directory_address,
                billing_address=billing_address,
            )
            exits.push_async_callback(stack.close)
            if worker:
                await exits.enter_async_context(start_worker(stack))
            return stack

        yield make


class start_worker:
    """The teleexpertise worker in-process on the stack's task queue, with its own channels."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self._exits = AsyncExitStack()

    async def __aenter__(self) -> None:
        stack = self._stack
        settings = worker_settings(
            stack.pki,
            stack.settings.database_url,
            stack.settings.temporal_address,
            stack.directory_address,
            stack.billing_address,
            stack.task_queue,
        )
        directory = open_channel(settings, settings.directory_address)
        billing = open_channel(settings, settings.billing_address)
        self._exits.push_async_callback(directory.close)
        self._exits.push_async_callback(billing.close)
        worker = build_worker(
            settings, stack.client, stack.service_pool, {"directory": directory, "billing": billing}
        )
        await self._exits.enter_async_context(worker)

    async def __aexit__(self, *exc: object) -> None:
        await self._exits.aclose()


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack()
