"""A region's working day replayed against the whole hub at 1×, 10× and 100×, and the cost of each case.

The hub runs as `make run` runs it (tests/bench/hub.py: every service, worker and the console as their own
processes), or is an existing one (`python -m tests.bench load --hub DIR`). The load is this process: the
hospital systems of the region, over mutual TLS with their establishments' certificates and their
practitioners' tokens, calling on the schedule of `tests/bench/load.py`'s day (open loop: a call leaves at its
time whatever the others are doing; the steps of one case follow each other).

1. Idle: resident memory of each service process once the hub is up (target ≤ 120 MB).
2. Replay. For each speed `s` (1×, 10×, 30×, 100×: 30× shows where the curve bends), the slice of the
   day starting at 09:30 (the morning peak) that lasts `PHASE_SECONDS[s] × s` seconds of the day, played in
   `PHASE_SECONDS[s]` seconds. Cases with steps in the
   slice are first brought to where the day had them (their earlier steps, and the booking of the
   appointments held today, made before the slice and not measured). Figures per speed: offered and achieved
   calls per second, p50/p95/p99 per RPC, errors (any failed call: there must be none), the lag of workflow
   work behind its trigger (booking → workflow started, request → routed to the pool, completion → billed,
   the 1-hour reminders of appointments due an hour after the slice against their due time), and per
   process the CPU seconds and peak RSS; CPU per case, to see whether it stays flat as the load grows.
3. Cost per case, measured alone after the replay: CPU-ms of every process (less what they use idle) and
   database statements (round trips) per booking, per complete teleconsultation (booked, consented, started,
   completed, billed, reported), per complete téléexpertise (requested, accepted, reported, billed) and per
   quote.
4. Profiles: the three costliest cases again under py-spy (sampling, non-blocking), attached to the two
   processes that spend the most on each; collapsed stacks and a summary in build/bench/profiles/.

Environment: PARCOURS_BENCH_SPEEDS (default "1,10,30,50,100"), PARCOURS_BENCH_PHASE_SECONDS
("90,60,45,35,20"), PARCOURS_BENCH_PRACTITIONERS (600), PARCOURS_BENCH_PROFILE (1; 0 skips the profiles),
PARCOURS_BENCH_HUB (a deployment's data folder: replay against it instead of starting one).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2, timeofday_pb2  # type: ignore[import-untyped]
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc
from parcours.contracts.v1 import contracts_pb2 as k
from parcours.contracts.v1 import contracts_pb2_grpc
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc
from parcours.expertise.v1 import expertise_pb2, expertise_pb2_grpc
from parcours.scheduling.v1 import scheduling_pb2 as s
from parcours.scheduling.v1 import scheduling_pb2_grpc
from parcours.type.v1 import practice_pb2
from temporalio.client import Client

from services.contracts import clock as legal_clock
from services.directory.demo import DEMO_PRACTITIONERS
from services.directory.identifiers import nir_key
from services.kit.settings import KitSettings, TemporalSettings
from services.kit.temporal import connect_client
from services.kit.tokens import mint_token, staff_subject
from tests.bench import BenchEnv
from tests.bench.hub import (
    HELPER_PROCESSES,
    SERVICE_PROCESSES,
    Hub,
    Processes,
    cpu_between,
    enable_statements,
    hub_roots,
    load_hub,
    started_hub,
    statements,
)
from tests.bench.load import HOUR, Day, Step, peak_hour_rate, region_day
from tests.billing.builders import paris, teleexpertise
from tests.support import DAUPHINE, LOIRE, VAL_RHONE, bearer, component_channel, establishment_channel

SPEEDS = tuple(int(v) for v in os.environ.get("PARCOURS_BENCH_SPEEDS", "1,10,30,50,100").split(","))
PHASE_SECONDS = tuple(
    float(v) for v in os.environ.get("PARCOURS_BENCH_PHASE_SECONDS", "90,60,45,35,20").split(",")
)
PRACTITIONERS = int(os.environ.get("PARCOURS_BENCH_PRACTITIONERS", "600"))
PROFILE = os.environ.get("PARCOURS_BENCH_PROFILE", "1") != "0"
SLICE_START = 9.5 * HOUR
SLOT_MINUTES = 5
# Appointments held today are booked into slots starting this soon (their join window, 15 minutes before
# the start by default, is then open during the whole slice; the no-show grace, 30 minutes after, too).
HELD_FROM, HELD_TO = timedelta(minutes=1), timedelta(minutes=14)
SETUP_IN_FLIGHT = 16
# How long the replay waits for the cases completed in a slice to close (billed, reported) before it counts
# the rest as late.
CLOSE_TIMEOUT_SECONDS = 600.0
TEST_NIR_OID = "1.2.250.1.213.1.4.10"
ISSUER = KitSettings.model_fields["token_issuer"].default
AUDIENCE = KitSettings.model_fields["token_audience"].default
# Each GHT of the demo region: the establishment its systems call through, its médecin traitant.
GHTS = {LOIRE: "10000000101", DAUPHINE: "10000000801", VAL_RHONE: "10000001201"}
REQUESTER = "10000000101"  # a GP of GHT Loire asks for téléexpertises (dermatology, the GHT's pool)
EXPERT = "10000002001"
# Contracts casework: a cardiologist of GHT Dauphiné declares the télésurveillance his team operates; the CH
# du Forez (GHT Loire's support) files ARS contracts; an ARS officer of region 84 reviews both (the console's
# identity carries the officer's calls, as in production).
OPERATOR_DOCTOR = "10000001701"
ARS_OFFICER = ("bench-ars84", "ars_officer", {"region": "84"})
PROMOTER = ("bench-promoter", "promoter", {})

Metadata = tuple[tuple[str, str], ...]


# --- figures ---------------------------------------------------------------------------------------------


def quantiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"count": 0, "p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    ordered = sorted(values)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else [ordered[0]] * 99
    return {
        "count": len(ordered),
        "p50_ms": round(cuts[49] * 1000, 1),
        "p95_ms": round(cuts[94] * 1000, 1),
        "p99_ms": round(cuts[98] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


@dataclass
class Calls:
    """Latencies and failures per RPC."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    first_errors: list[str] = field(default_factory=list)

    async def timed(self, operation: str, call: Awaitable[Any]) -> Any:
        started = time.perf_counter()
        try:
            result = await call
        except grpc.aio.AioRpcError as error:
            self.errors[operation] += 1
            if len(self.first_errors) < 10:
                self.first_errors.append(f"{operation}: {error.code().name} {error.details()}")
            raise
        self.latencies[operation].append(time.perf_counter() - started)
        return result

    def forgive(self, operation: str) -> None:
        """The last failure of `operation` is not an error (the call is tried again)."""
        self.errors[operation] -= 1
        if not self.errors[operation]:
            del self.errors[operation]
        mine = [i for i, text in enumerate(self.first_errors) if text.startswith(f"{operation}: ")]
        if mine:
            del self.first_errors[mine[-1]]

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            op: {**quantiles(v), "errors": self.errors.get(op, 0)} for op, v in sorted(self.latencies.items())
        }


# --- the region's actors ---------------------------------------------------------------------------------


@dataclass
class Region:
    """Who calls: establishments' channels, tokens, the bench's practitioners and patients."""

    hub: Hub
    temporal: Client
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    practitioners: dict[str, str] = field(default_factory=dict)  # rpps → finess
    patients: dict[str, list[str]] = field(default_factory=dict)  # finess (GHT) → patient names
    te_patients: list[str] = field(default_factory=list)
    tokens: dict[str, Metadata] = field(default_factory=dict)

    def token(
        self,
        rpps: str | None = None,
        *,
        staff: str | None = None,
        operator: bool = False,
        role: str | None = None,
        scope: dict[str, str] | None = None,
    ) -> Metadata:
        key = rpps or f"staff:{staff}:{operator}:{role}:{sorted((scope or {}).items())}"
        if key not in self.tokens:
            if rpps is not None:
                specialty = SPECIALTY_OF.get(rpps, "SPECIALTY_GENERAL_MEDICINE")
                subject, profession, roles = f"8{rpps}", "PROFESSION_PHYSICIAN", ()
            else:
                subject, profession, specialty = staff_subject(staff or "bench"), None, None
                roles = ("hub_operator",) if operator else (role,) if role else ()
            self.tokens[key] = bearer(
                mint_token(
                    signing_key_file=self.hub.pki.signing_key_file,
                    kid=self.hub.pki.signing_kid,
                    issuer=ISSUER,
                    audience=AUDIENCE,
                    subject=subject,
                    profession=profession,
                    specialty=specialty,
                    roles=roles,
                    ttl=timedelta(hours=6),
                    **(scope or {}),
                )
            )
        return self.tokens[key]

    def channel(self, service: str, finess: str) -> grpc.aio.Channel:
        """One channel per service and establishment (its certificate), made when first needed."""
        key = f"{service}/{finess}"
        if key not in self.channels:
            address = self.hub.addresses[service]
            self.channels[key] = (
                component_channel(self.hub.pki, address, finess)
                if not finess.isdigit()
                else establishment_channel(self.hub.pki, address, finess)
            )
        return self.channels[key]

    def scheduling(self, finess: str) -> scheduling_pb2_grpc.SchedulingServiceStub:
        return scheduling_pb2_grpc.SchedulingServiceStub(self.channel("scheduling", finess))

    def expertise(self, finess: str) -> expertise_pb2_grpc.ExpertiseServiceStub:
        return expertise_pb2_grpc.ExpertiseServiceStub(self.channel("expertise", finess))

    def directory(self, finess: str) -> directory_pb2_grpc.DirectoryServiceStub:
        return directory_pb2_grpc.DirectoryServiceStub(self.channel("directory", finess))

    def contracts(self, finess: str) -> contracts_pb2_grpc.ContractServiceStub:
        return contracts_pb2_grpc.ContractServiceStub(self.channel("contracts", finess))

    def billing_as_workflows(self) -> billing_pb2_grpc.BillingServiceStub:
        return billing_pb2_grpc.BillingServiceStub(self.channel("billing", "workflows"))

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


SPECIALTY_OF = {p.rpps: p.specialty for p in DEMO_PRACTITIONERS}
DEMO_PLACE = {p.rpps: p.practice_places[0] for p in DEMO_PRACTITIONERS}


def duration(minutes: float) -> Duration:
    return Duration(seconds=int(minutes * 60))


def stamp(value: datetime) -> Timestamp:
    found = Timestamp()
    found.FromDatetime(value.astimezone(UTC))
    return found


def when(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


async def gather_limited(
    calls: Iterable[Callable[[], Awaitable[Any]]], limit: int = SETUP_IN_FLIGHT
) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with semaphore:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls))


async def seed(region: Region, practitioners: int) -> dict[str, float]:
    """The bench's practitioners (GPs of the three GHTs, one schedule each: 5-minute follow-up slots round
    the clock, staggered by a minute from one practitioner to the next) and patients known in each GHT."""
    started = time.perf_counter()
    operator = region.token(staff="bench-loader", operator=True)
    directory = region.directory(LOIRE)
    run = random.Random().randrange(10**6)
    places = list(GHTS)

    async def practitioner(i: int) -> None:
        rpps = f"39{run:06d}{i:03d}"
        finess = places[i % len(places)]
        await directory.CreatePractitioner(
            directory_pb2.CreatePractitionerRequest(
                request_id=str(uuid.uuid4()),
                practitioner=directory_pb2.PractitionerInput(
                    rpps=rpps,
                    family_name="Charge",
                    given_name="Banc",
                    profession=practice_pb2.PROFESSION_PHYSICIAN,
                    specialty=practice_pb2.SPECIALTY_GENERAL_MEDICINE,
                    sector=practice_pb2.CONVENTION_SECTOR_1,
                    practice_places=[directory_pb2.PracticePlace(establishment=f"establishments/{finess}")],
                    active=True,
                ),
            ),
            metadata=operator,
        )
        stub = region.scheduling(finess)
        schedule = (
            await stub.CreateSchedule(
                s.CreateScheduleRequest(
                    request_id=str(uuid.uuid4()),
                    schedule=s.ScheduleInput(
                        practitioner=f"practitioners/{rpps}",
                        establishment=f"establishments/{finess}",
                        service_types=[
                            s.ServiceTypeDuration(
                                service_type=s.SERVICE_TYPE_FOLLOW_UP, slot_duration=duration(SLOT_MINUTES)
                            )
                        ],
                        minimum_notice=duration(0),
                        cancellation_cutoff=duration(60),
                        booking_horizon_days=2,
                    ),
                ),
                metadata=operator,
            )
        ).schedule
        offset = i % SLOT_MINUTES
        for day in range(1, 8):
            await stub.CreateAvailabilityRule(
                s.CreateAvailabilityRuleRequest(
                    request_id=str(uuid.uuid4()),
                    parent=schedule.name,
                    rule=s.AvailabilityRuleInput(
                        day_of_week=day,
                        start_time_of_day=timeofday_pb2.TimeOfDay(hours=0, minutes=offset),
                        end_time_of_day=timeofday_pb2.TimeOfDay(hours=23, minutes=55 + offset % 5),
                        service_type=s.SERVICE_TYPE_FOLLOW_UP,
                    ),
                ),
                metadata=operator,
            )
        region.practitioners[rpps] = finess

    await gather_limited([lambda i=i: practitioner(i) for i in range(practitioners)], 8)
    seeded_practitioners = time.perf_counter() - started
    for finess in places:
        region.patients[finess] = await create_patients(region, finess, 60, run)
    region.te_patients = await create_patients(region, LOIRE, 400, run, offset=60)
    return {
        "practitioners": practitioners,
        "practitioner_seconds": round(seeded_practitioners, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }


async def create_patients(region: Region, finess: str, count: int, run: int, offset: int = 0) -> list[str]:
    """Patients known at `finess` (qualified INS, a local IPP); distinct ones keep billing's yearly
    téléexpertise quota (4 per patient and professional) out of the way."""
    stub = region.directory(finess)
    metadata = region.token(GHTS[finess])
    place = f"{finess[:2]}{run % 900 + 1:03d}"

    async def one(i: int) -> str:
        # A NIR of its own for each patient of this run: birth year and month, then the order number.
        j = offset + i
        born = date(1940 + j % 60, 1 + j // 60 % 12, 1 + j % 28)
        first13 = f"{1 + j % 2}{born.year % 100:02d}{born.month:02d}{place}{(run + j // 720) % 999 + 1:03d}"
        reply = await stub.CreatePatient(
            directory_pb2.CreatePatientRequest(
                request_id=str(uuid.uuid4()),
                ins=directory_pb2.InsIdentityInput(
                    matricule=first13 + nir_key(first13),
                    oid=TEST_NIR_OID,
                    birth_family_name=f"CHARGE{run}{offset + i}",
                    birth_given_names="BANC",
                    birth_date=date_pb2.Date(year=born.year, month=born.month, day=born.day),
                    sex=directory_pb2.SEX_MALE if i % 2 == 0 else directory_pb2.SEX_FEMALE,
                    birth_place_code=place,
                ),
                identity_status=directory_pb2.IDENTITY_STATUS_QUALIFIED,
                local_identifier=directory_pb2.LocalIdentifier(
                    establishment=f"establishments/{finess}", ipp=f"CHARGE-{run}-{offset + i}"
                ),
            ),
            metadata=metadata,
        )
        return str(reply.patient.name)

    return list(await gather_limited([lambda i=i: one(i) for i in range(count)], 8))


# --- slots -----------------------------------------------------------------------------------------------


class Slots:
    """Free slots of the bench's practitioners, handed out once each (no two bookings race for one)."""

    def __init__(self, region: Region) -> None:
        self.region = region
        self.taken: set[str] = set()

    async def between(self, start: datetime, end: datetime, limit: int) -> list[tuple[str, str]]:
        """(slot, rpps) of up to `limit` free slots starting in [start, end), spread over practitioners."""
        found: list[tuple[str, str]] = []
        stub = self.region.scheduling(LOIRE)
        metadata = self.region.token(staff="bench-front-desk")
        token = ""
        while len(found) < limit:
            reply = await stub.SearchSlots(
                s.SearchSlotsRequest(
                    region="regions/84",
                    specialty=practice_pb2.SPECIALTY_GENERAL_MEDICINE,
                    start_time=stamp(start),
                    end_time=stamp(end),
                    page_size=500,
                    page_token=token,
                ),
                metadata=metadata,
            )
            for slot in reply.slots:
                rpps = slot.practitioner.removeprefix("practitioners/")
                if rpps in self.region.practitioners and slot.name not in self.taken:
                    found.append((slot.name, rpps))
            token = reply.next_page_token
            if not token:
                break
        random.Random(len(self.taken)).shuffle(found)
        self.taken.update(name for name, _ in found[:limit])
        return found[:limit]


# --- the steps as calls ----------------------------------------------------------------------------------


@dataclass
class Chain:
    """What a case's steps leave for the next ones."""

    steps: list[Step]
    appointment: s.Appointment | None = None
    rpps: str = ""
    finess: str = ""
    patient: str = ""
    request: str = ""  # teleexpertiseRequests/{id}
    contracts_case: str = ""  # operatorDeclarations/{id} or arsContracts/{id}
    expert: str = EXPERT
    completed_at: float = 0.0  # wall clock (time.time()) of a completion
    done: asyncio.Event = field(default_factory=asyncio.Event)
    step: str = ""  # the step being played
    request_ids: dict[str, str] = field(default_factory=dict)

    def request_id(self) -> str:
        """The request id of the step being played: the same when the step is tried again."""
        return self.request_ids.setdefault(self.step, str(uuid.uuid4()))


class Player:
    """Turns each step of the model into its RPC."""

    def __init__(self, region: Region, slots: Slots, calls: Calls, *, retries: int = 0) -> None:
        self.region = region
        self.slots = slots
        self.calls = calls
        # Tries again (same request id) a call answered UNAVAILABLE: a hospital system's client does, and
        # the preparation of a slice does (it is not measured); the measured replay never does (retries=0),
        # so such an answer counts there as an error.
        self.retries = retries
        self.future: list[tuple[str, str]] = []
        self.rng = random.Random(11)
        self.booked: list[uuid.UUID] = []
        self.requests: list[str] = []
        self.completed: list[Chain] = []

    def front_desk(self) -> Metadata:
        return self.region.token(staff="bench-front-desk")

    def next_future_slot(self) -> tuple[str, str]:
        if not self.future:
            raise RuntimeError("the bench ran out of free slots to book: raise PARCOURS_BENCH_PRACTITIONERS")
        return self.future.pop()

    async def book(
        self, chain: Chain, slot: str, rpps: str, *, consent: bool, op: str = "BookAppointment"
    ) -> None:
        finess = self.region.practitioners[rpps]
        patient = self.rng.choice(self.region.patients[finess])
        treating = f"practitioners/{GHTS[finess]}"
        request = s.BookAppointmentRequest(
            request_id=chain.request_id(),
            slot=slot,
            patient=patient,
            requester=treating,
            treating_physician=treating,
        )
        if consent:
            request.consent.CopyFrom(s.ConsentInput(method=s.CONSENT_METHOD_ELECTRONIC))
        reply = await self.calls.timed(
            op, self.region.scheduling(finess).BookAppointment(request, metadata=self.front_desk())
        )
        chain.appointment, chain.rpps, chain.finess, chain.patient = reply.appointment, rpps, finess, patient
        self.booked.append(uuid.UUID(reply.appointment.name.removeprefix("appointments/")))

    async def run(self, chain: Chain, step: Step) -> None:
        chain.step = f"{step.index}:{step.operation}"
        for attempt in range(self.retries + 1):
            try:
                return await self.play(chain, step)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise
                self.calls.forgive(step.operation)  # not an error: tried again
                await asyncio.sleep(0.5 * (attempt + 1))

    async def play(self, chain: Chain, step: Step) -> None:
        op = step.operation
        region = self.region
        if op == "SearchSlots":
            start = datetime.now(UTC) + timedelta(hours=self.rng.uniform(2, 40))
            finess = self.rng.choice(list(GHTS))
            await self.calls.timed(
                op,
                region.scheduling(finess).SearchSlots(
                    s.SearchSlotsRequest(
                        region="regions/84",
                        specialty=practice_pb2.SPECIALTY_GENERAL_MEDICINE,
                        start_time=stamp(start),
                        page_size=20,
                    ),
                    metadata=self.front_desk(),
                ),
            )
        elif op == "BookAppointment":
            slot, rpps = self.next_future_slot()
            await self.book(chain, slot, rpps, consent=self.rng.random() < 0.5)
        elif op == "CancelAppointment":
            assert chain.appointment is not None
            await self.calls.timed(
                op,
                region.scheduling(chain.finess).CancelAppointment(
                    s.CancelAppointmentRequest(
                        request_id=chain.request_id(),
                        name=chain.appointment.name,
                        initiator=s.PARTY_PATIENT,
                        reason=s.CANCELLATION_REASON_PATIENT_REQUEST,
                    ),
                    metadata=self.front_desk(),
                ),
            )
        elif op == "RescheduleAppointment":
            assert chain.appointment is not None
            slot, _ = self.next_future_slot_of(chain.rpps)
            reply = await self.calls.timed(
                op,
                region.scheduling(chain.finess).RescheduleAppointment(
                    s.RescheduleAppointmentRequest(
                        request_id=chain.request_id(),
                        name=chain.appointment.name,
                        slot=slot,
                        initiator=s.PARTY_PATIENT,
                    ),
                    metadata=self.front_desk(),
                ),
            )
            chain.appointment = reply.appointment
        elif op == "RecordConsent":
            assert chain.appointment is not None
            await self.calls.timed(
                op,
                region.scheduling(chain.finess).RecordConsent(
                    s.RecordConsentRequest(
                        request_id=chain.request_id(),
                        name=chain.appointment.name,
                        consent=s.ConsentInput(method=s.CONSENT_METHOD_ORAL),
                    ),
                    metadata=self.front_desk(),
                ),
            )
        elif op == "StartTeleconsultation":
            assert chain.appointment is not None
            await self.calls.timed(
                op,
                region.scheduling(chain.finess).StartTeleconsultation(
                    s.StartTeleconsultationRequest(
                        request_id=chain.request_id(), name=chain.appointment.name
                    ),
                    metadata=region.token(chain.rpps),
                ),
            )
        elif op == "CompleteTeleconsultation":
            assert chain.appointment is not None
            await self.calls.timed(
                op,
                region.scheduling(chain.finess).CompleteTeleconsultation(
                    s.CompleteTeleconsultationRequest(
                        request_id=chain.request_id(),
                        name=chain.appointment.name,
                        record=consultation_record(chain.rpps),
                    ),
                    metadata=region.token(chain.rpps),
                ),
            )
            chain.completed_at = time.time()
            self.completed.append(chain)
        elif op == "CreateTeleexpertiseRequest":
            chain.patient = region.te_patients.pop()
            reply = await self.calls.timed(
                op,
                region.expertise(LOIRE).CreateTeleexpertiseRequest(
                    expertise_pb2.CreateTeleexpertiseRequestRequest(
                        request_id=chain.request_id(),
                        teleexpertise_request=expertise_pb2.TeleexpertiseRequestInput(
                            patient=chain.patient,
                            patient_consent=True,
                            specialty=practice_pb2.SPECIALTY_DERMATOLOGY,
                            question="Lésion pigmentée : exérèse ?",
                            clinical_context="Lésion de 8 mm, asymétrique, évolutive depuis 6 mois.",
                            urgency=expertise_pb2.URGENCY_ROUTINE,
                        ),
                    ),
                    metadata=region.token(REQUESTER),
                ),
            )
            chain.request = reply.teleexpertise_request.name
            chain.expert = EXPERT
            self.requests.append(chain.request)
        elif op == "AcceptTeleexpertiseRequest":
            await self.calls.timed(
                op,
                self.expert_stub(chain).AcceptTeleexpertiseRequest(
                    expertise_pb2.AcceptTeleexpertiseRequestRequest(
                        request_id=chain.request_id(), name=chain.request
                    ),
                    metadata=region.token(chain.expert),
                ),
            )
        elif op == "HandBackTeleexpertiseRequest":
            reply = await self.calls.timed(
                op,
                self.expert_stub(chain).HandBackTeleexpertiseRequest(
                    expertise_pb2.HandBackTeleexpertiseRequestRequest(
                        request_id=chain.request_id(), name=chain.request, reason="Hors de mon champ."
                    ),
                    metadata=region.token(chain.expert),
                ),
            )
            candidates = [c.removeprefix("practitioners/") for c in reply.teleexpertise_request.candidates]
            known = [c for c in candidates if c in DEMO_PLACE]
            if not known:
                raise RuntimeError(f"no candidate the bench can act for after a hand-back: {candidates}")
            chain.expert = known[0]
        elif op == "AskTeleexpertiseQuestion":
            await self.calls.timed(
                op,
                self.expert_stub(chain).AskTeleexpertiseQuestion(
                    expertise_pb2.AskTeleexpertiseQuestionRequest(
                        request_id=chain.request_id(), name=chain.request, text="Photo dermoscopique ?"
                    ),
                    metadata=region.token(chain.expert),
                ),
            )
        elif op == "AnswerTeleexpertiseQuestion":
            await self.calls.timed(
                op,
                region.expertise(LOIRE).AnswerTeleexpertiseQuestion(
                    expertise_pb2.AnswerTeleexpertiseQuestionRequest(
                        request_id=chain.request_id(), name=chain.request, text="Jointe au dossier."
                    ),
                    metadata=region.token(REQUESTER),
                ),
            )
        elif op == "SubmitTeleexpertiseReport":
            await self.calls.timed(
                op,
                self.expert_stub(chain).SubmitTeleexpertiseReport(
                    expertise_pb2.SubmitTeleexpertiseReportRequest(
                        request_id=chain.request_id(),
                        name=chain.request,
                        report=expertise_pb2.ReportInput(summary="Naevus bénin, surveillance."),
                    ),
                    metadata=region.token(chain.expert),
                ),
            )
            chain.completed_at = time.time()
            self.completed.append(chain)
        elif op in CONTRACTS_STEPS:
            await self.contracts_step(chain, op)
        else:
            raise ValueError(f"no call for the step {op}")

    async def contracts_step(self, chain: Chain, op: str) -> None:
        region = self.region
        promoter = region.token(staff=PROMOTER[0], role=PROMOTER[1], scope=PROMOTER[2])
        officer = region.token(staff=ARS_OFFICER[0], role=ARS_OFFICER[1], scope=ARS_OFFICER[2])
        as_officer = region.contracts("console")
        today = legal_clock.local_date(datetime.now(UTC), "Europe/Paris")
        name = chain.contracts_case
        if op == "CreateOperatorDeclaration":
            reply = await self.calls.timed(
                op,
                region.contracts(DAUPHINE).CreateOperatorDeclaration(
                    k.CreateOperatorDeclarationRequest(
                        request_id=chain.request_id(),
                        operator_declaration=k.OperatorDeclaration(
                            region="regions/84",
                            departement="38",
                            indications=[k.INDICATION_HEART_FAILURE],
                            device="CardioSuivi 3",
                            device_on_latm_list=True,
                            operator_level=billing_pb2.OPERATOR_LEVEL_1,
                        ),
                    ),
                    metadata=region.token(OPERATOR_DOCTOR),
                ),
            )
            chain.contracts_case = reply.operator_declaration.name
        elif op == "GetOperatorDeclaration":
            await self.calls.timed(
                op,
                as_officer.GetOperatorDeclaration(
                    k.GetOperatorDeclarationRequest(name=name), metadata=officer
                ),
            )
        elif op == "AcknowledgeOperatorDeclaration":
            await self.calls.timed(
                op,
                as_officer.AcknowledgeOperatorDeclaration(
                    k.AcknowledgeOperatorDeclarationRequest(
                        request_id=chain.request_id(),
                        name=name,
                        effective_date=date_pb2.Date(year=today.year, month=today.month, day=today.day),
                    ),
                    metadata=officer,
                ),
            )
        elif op == "RequestOperatorDeclarationDocuments":
            await self.calls.timed(
                op,
                as_officer.RequestOperatorDeclarationDocuments(
                    k.RequestOperatorDeclarationDocumentsRequest(
                        request_id=chain.request_id(),
                        name=name,
                        motivation="Pièce manquante",
                        items=["Marquage CE du dispositif"],
                    ),
                    metadata=officer,
                ),
            )
        elif op == "CreateArsContract":
            end = today + timedelta(days=730)
            reply = await self.calls.timed(
                op,
                region.contracts(LOIRE).CreateArsContract(
                    k.CreateArsContractRequest(
                        request_id=chain.request_id(),
                        ars_contract=k.ArsContract(
                            region="regions/84",
                            departement="42",
                            title="Téléconsultations programmées hors parcours",
                            description="Téléconsultations programmées avec les médecins de l'établissement.",
                            activity=k.Activity(
                                act_type=billing_pb2.ACT_TYPE_TELECONSULTATION,
                                offerer=k.OFFERER_ESTABLISHMENT,
                                in_parcours=False,
                            ),
                            requested_start_date=date_pb2.Date(
                                year=today.year, month=today.month, day=today.day
                            ),
                            requested_end_date=date_pb2.Date(year=end.year, month=end.month, day=end.day),
                        ),
                    ),
                    metadata=promoter,
                ),
            )
            chain.contracts_case = reply.ars_contract.name
        elif op == "SubmitArsContract":
            await self.calls.timed(
                op,
                region.contracts(LOIRE).SubmitArsContract(
                    k.SubmitArsContractRequest(request_id=chain.request_id(), name=name), metadata=promoter
                ),
            )
        elif op == "GetArsContract":
            await self.calls.timed(
                op, as_officer.GetArsContract(k.GetArsContractRequest(name=name), metadata=officer)
            )
        elif op == "MarkArsContractComplete":
            await self.calls.timed(
                op,
                as_officer.MarkArsContractComplete(
                    k.MarkArsContractCompleteRequest(request_id=chain.request_id(), name=name),
                    metadata=officer,
                ),
            )
            chain.completed_at = time.time()

    def next_future_slot_of(self, rpps: str) -> tuple[str, str]:
        # A move stays with the same practitioner when one of their slots is left, else any.
        for i in range(len(self.future) - 1, -1, -1):
            if self.future[i][1] == rpps:
                return self.future.pop(i)
        return self.next_future_slot()

    def expert_stub(self, chain: Chain) -> expertise_pb2_grpc.ExpertiseServiceStub:
        return self.region.expertise(DEMO_PLACE[chain.expert])


CONTRACTS_STEPS = frozenset(
    {
        "CreateOperatorDeclaration",
        "GetOperatorDeclaration",
        "AcknowledgeOperatorDeclaration",
        "RequestOperatorDeclarationDocuments",
        "CreateArsContract",
        "SubmitArsContract",
        "GetArsContract",
        "MarkArsContractComplete",
    }
)


def consultation_record(rpps: str) -> s.TeleconsultationRecord:
    # Billing refuses acts in the future of its clock: the act took place just now.
    started = datetime.now(UTC) - timedelta(minutes=20)
    return s.TeleconsultationRecord(
        report="Patient vu en téléconsultation de suivi. Pas de changement de traitement.",
        acts=[s.RecordedAct(code="TCG", description="Téléconsultation de suivi")],
        participants=[
            s.RecordParticipant(
                practitioner=f"practitioners/{rpps}", role=s.RecordParticipant.ROLE_TELECONSULTANT
            )
        ],
        act_start_time=stamp(started),
        act_end_time=stamp(started + timedelta(minutes=15)),
        no_technical_incident=True,
    )


# --- one phase of the replay -----------------------------------------------------------------------------


@dataclass
class Phase:
    speed: int
    seconds: float
    steps: list[Step]
    chains: dict[str, Chain]


def plan(day: Day, speed: int, seconds: float) -> Phase:
    steps = day.window(SLICE_START, seconds * speed)
    chains = {case: Chain(steps=day.case_steps(case)) for case in {st.case for st in steps}}
    return Phase(speed, seconds, steps, chains)


# Steps that are Updates on a teleconsultation's workflow: the workflow must have been started by the relay.
ON_A_STARTED_WORKFLOW = frozenset({"StartTeleconsultation", "CompleteTeleconsultation"})


async def prepare(phase: Phase, player: Player, slots: Slots, pool: asyncpg.Pool) -> dict[str, Any]:
    """Bring every case of the slice to where the day had it when the slice begins (not measured)."""
    started = time.perf_counter()
    first_in_window = {case: min(st.index for st in phase.steps if st.case == case) for case in phase.chains}
    held = [c for c, chain in phase.chains.items() if c.endswith("/held")]
    near = await slots.between(datetime.now(UTC) + HELD_FROM, datetime.now(UTC) + HELD_TO, len(held))
    if len(near) < len(held):
        raise RuntimeError(
            f"{len(held)} appointments held in the slice, {len(near)} free slots starting in the next "
            f"{HELD_TO.seconds // 60} minutes: raise PARCOURS_BENCH_PRACTITIONERS"
        )
    bookings = sum(1 for st in phase.steps if st.operation in ("BookAppointment", "RescheduleAppointment"))
    earlier = sum(
        1
        for case, chain in phase.chains.items()
        for st in chain.steps
        if st.index < first_in_window[case] and st.operation == "BookAppointment"
    )
    player.future = await slots.between(
        datetime.now(UTC) + timedelta(hours=3),
        datetime.now(UTC) + timedelta(hours=46),
        bookings + earlier + 10,
    )
    setup_calls = Calls()
    setup = Player(player.region, slots, setup_calls, retries=5)
    setup.future = player.future

    earlier_steps = {
        case: [st for st in chain.steps if st.index < first_in_window[case]]
        for case, chain in phase.chains.items()
    }

    async def bring(
        case: str, chain: Chain, slot: tuple[str, str] | None, *, workflows_started: bool
    ) -> None:
        # First the bookings and what needs no workflow yet; once the relay has started every workflow,
        # the Updates (start, completion) the day had made before the slice.
        if slot is not None and not workflows_started:
            consent = not any(st.operation == "RecordConsent" for st in chain.steps)
            await setup.book(chain, slot[0], slot[1], consent=consent)
        for st in earlier_steps[case]:
            if (st.operation in ON_A_STARTED_WORKFLOW) == workflows_started:
                await setup.run(chain, st)

    held_slots = dict(zip(held, near, strict=False))
    for workflows_started in (False, True):
        if workflows_started:
            await outbox_drained(pool)
        try:
            await gather_limited(
                [
                    lambda c=c, ch=ch, ws=workflows_started: bring(
                        c, ch, held_slots.get(c), workflows_started=ws
                    )
                    for c, ch in phase.chains.items()
                ]
            )
        except grpc.aio.AioRpcError as error:
            raise RuntimeError(f"preparing the slice failed: {error.code().name} {error.details()}") from None
    if setup_calls.errors:
        raise RuntimeError(f"preparing the slice failed: {setup_calls.first_errors}")
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "calls": sum(len(v) for v in setup_calls.latencies.values()),
    }


async def reminder_probes(region: Region, slots: Slots, seconds: float, count: int) -> list[uuid.UUID]:
    """Appointments whose 1-hour reminder falls due during the slice (their lag is measured)."""
    player = Player(region, slots, Calls())
    now = datetime.now(UTC)
    # Slots start on whole minutes: the window spans at least one, however short the slice.
    found = await slots.between(
        now + timedelta(hours=1, seconds=5), now + timedelta(hours=1, seconds=max(seconds, 70)), count
    )
    chains = [Chain(steps=[]) for _ in found]
    await gather_limited(
        [
            lambda ch=ch, sl=sl: player.book(ch, sl[0], sl[1], consent=True, op="setup")
            for ch, sl in zip(chains, found, strict=True)
        ]
    )
    return [uuid.UUID(ch.appointment.name.removeprefix("appointments/")) for ch in chains if ch.appointment]


async def outbox_drained(pool: asyncpg.Pool) -> None:
    deadline = time.monotonic() + 300
    while await pool.fetchval("SELECT count(*) FROM scheduling.outbox WHERE done_time IS NULL /* bench: */"):
        if time.monotonic() > deadline:
            raise RuntimeError("the scheduling relay did not start the workflows within 5 minutes")
        await asyncio.sleep(0.1)  # the relay's progress, polled


async def play(phase: Phase, player: Player) -> float:
    """Every step of the slice at its time (compressed by the speed); a case's steps one after another."""
    started = time.perf_counter()
    scheduled = sorted(phase.steps)

    by_case: dict[str, list[Step]] = defaultdict(list)
    for st in scheduled:
        by_case[st.case].append(st)

    async def chain_runner(case: str) -> None:
        chain = phase.chains[case]
        for st in by_case[case]:
            delay = started + (st.at - SLICE_START) / phase.speed - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # the step's time in the compressed day
            try:
                await player.run(chain, st)
            except grpc.aio.AioRpcError:
                return  # counted; the case's later steps cannot follow

    await asyncio.gather(*(chain_runner(c) for c in phase.chains))
    return time.perf_counter() - started


async def workflow_lags(pool: asyncpg.Pool, player: Player, probes: list[uuid.UUID]) -> dict[str, Any]:
    """Lag of workflow work behind its trigger, read from the database's and Temporal's clocks."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pending = await pool.fetchval(
            "SELECT count(*) FROM scheduling.outbox WHERE case_id = ANY($1::uuid[]) "
            "AND done_time IS NULL /* bench: */",
            player.booked,
        )
        if not pending:
            break
        await asyncio.sleep(0.2)  # another process's progress: polled
    started = await pool.fetch(
        """
        SELECT extract(epoch FROM o.done_time - a.create_time) AS lag
        FROM scheduling.outbox o JOIN scheduling.appointments a ON a.appointment_id = o.case_id
        WHERE o.case_id = ANY($1::uuid[]) AND o.command = 'start' AND o.done_time IS NOT NULL /* bench: */
        """,
        player.booked,
    )
    routed = await pool.fetch(
        """
        SELECT extract(epoch FROM min(n.create_time) - r.create_time) AS lag
        FROM expertise.requests r JOIN expertise.notifications n ON n.case_id = r.case_id
        WHERE r.case_id = ANY($1::uuid[]) AND n.kind = 'ROUTED' GROUP BY r.case_id, r.create_time /* bench: */
        """,
        [uuid.UUID(n.removeprefix("teleexpertiseRequests/")) for n in player.requests],
    )
    billed: list[float] = []
    late = 0
    closing_deadline = time.monotonic() + CLOSE_TIMEOUT_SECONDS

    async def closed(chain: Chain) -> None:
        nonlocal late
        workflow_id = (
            chain.appointment.workflow_id
            if chain.appointment is not None
            else f"teleexpertise-{chain.request.removeprefix('teleexpertiseRequests/')}"
        )
        handle = player.region.temporal.get_workflow_handle(workflow_id)
        try:
            await asyncio.wait_for(handle.result(), max(1.0, closing_deadline - time.monotonic()))
        except TimeoutError:
            late += 1  # still open at the deadline: reported, not waited for
            return
        described = await handle.describe()
        if described.close_time is not None:
            billed.append(described.close_time.timestamp() - chain.completed_at)

    await gather_limited([lambda ch=ch: closed(ch) for ch in player.completed], 32)
    reminders: list[Any] = []
    if probes:
        due = max(0.0, await _latest_due(pool, probes) - time.time())
        await asyncio.sleep(due + 1)  # the probes' reminders fall due at their time: waited for, then read
        reminders = await pool.fetch(
            """
            SELECT extract(epoch FROM n.send_time - (a.start_time - interval '1 hour')) AS lag
            FROM scheduling.notifications n JOIN scheduling.appointments a USING (appointment_id)
            WHERE n.appointment_id = ANY($1::uuid[]) AND n.kind = 'KIND_REMINDER' AND n.label = 'PT1H'
              AND n.recipient LIKE 'patients/%' /* bench: */
            """,
            probes,
        )
    return {
        "booking_to_workflow_started": quantiles([float(r["lag"]) for r in started]),
        "request_to_routed": quantiles([float(r["lag"]) for r in routed]),
        "completion_to_case_closed": {**quantiles(billed), "still_open_after_deadline": late},
        "reminder_1h_behind_due_time": {
            **quantiles([float(r["lag"]) for r in reminders]),
            "probes": len(probes),
        },
    }


async def _latest_due(pool: asyncpg.Pool, probes: list[uuid.UUID]) -> float:
    value = await pool.fetchval(
        "SELECT extract(epoch FROM max(start_time) - interval '1 hour') FROM scheduling.appointments "
        "WHERE appointment_id = ANY($1::uuid[]) /* bench: */",
        probes,
    )
    return float(value or 0.0)


class Sampler:
    """Peak RSS per process group while something runs (sampled twice a second)."""

    def __init__(self, processes: Processes) -> None:
        self.processes = processes
        self.peak: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            for group, mb in self.processes.rss_mb().items():
                self.peak[group] = max(self.peak.get(group, 0.0), round(mb, 1))
            await asyncio.sleep(0.5)  # the sampling period

    def __enter__(self) -> Sampler:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def replay(
    region: Region,
    pool: asyncpg.Pool,
    processes: Processes,
    slots: Slots,
    day: Day,
    speed: int,
    seconds: float,
    idle: tuple[dict[str, float], float],
) -> dict[str, Any]:
    phase = plan(day, speed, seconds)
    calls = Calls()
    player = Player(region, slots, calls)
    print(f"bench load: {speed}x: preparing {len(phase.chains)} cases of the slice", flush=True)
    prepared = await prepare(phase, player, slots, pool)
    held_rate = sum(1 for st in phase.steps if st.operation == "StartTeleconsultation") / seconds
    probes = await reminder_probes(region, slots, seconds, max(10, min(200, round(held_rate * seconds))))
    await outbox_drained(pool)  # every workflow of the cases brought to the slice is started
    print(f"bench load: {speed}x: {len(phase.steps)} calls in {seconds:.0f} s", flush=True)
    before, rounds_before = processes.usage(), await statements(pool)
    with Sampler(processes) as sampler:
        elapsed = await play(phase, player)
        lags = await workflow_lags(pool, player, probes)
    after, rounds_after = processes.usage(), await statements(pool)
    wall = after.at - before.at
    # Less what each process uses idle over the same time (the wait for the reminders' due time is idle).
    cpu = {
        k: round(max(0.0, v - idle[0].get(k, 0.0) * wall), 3) for k, v in cpu_between(before, after).items()
    }
    offered = Counter(st.operation for st in phase.steps)
    made = sum(len(v) for v in calls.latencies.values())
    errors = sum(calls.errors.values())
    hub_cpu = sum(v for k, v in cpu.items() if k != "bench client")
    result = {
        "speed": speed,
        "slice": {"from": _clock(SLICE_START), "to": _clock(SLICE_START + seconds * speed)},
        "seconds": seconds,
        "played_seconds": round(elapsed, 2),
        "cases": len(phase.chains),
        "offered_calls": len(phase.steps),
        "offered_per_second": round(len(phase.steps) / seconds, 2),
        "achieved_per_second": round(made / elapsed, 2),
        "calls": made,
        "errors": errors,
        "first_errors": calls.first_errors,
        "operations": dict(sorted(offered.items())),
        "rpc": calls.summary(),
        "lags": lags,
        "cpu_seconds": cpu,
        "cpu_share_of_a_core": {k: round(v / wall, 3) for k, v in cpu.items()},
        "measured_seconds": round(wall, 1),
        "hub_cpu_seconds": round(hub_cpu, 2),
        "hub_cpu_ms_per_case": round(hub_cpu * 1000 / max(1, len(phase.chains)), 1),
        "hub_cpu_ms_per_call": round(hub_cpu * 1000 / max(1, made), 2),
        "db_statements": round(max(0.0, rounds_after - rounds_before - idle[1] * wall)),
        "peak_rss_mb": dict(sorted(sampler.peak.items())),
        "prepared": prepared,
    }
    print(
        f"  {speed}x: {result['offered_per_second']} calls/s offered, "
        f"{result['achieved_per_second']} achieved, {errors} errors, hub CPU {hub_cpu:.1f} s "
        f"({result['hub_cpu_ms_per_case']} ms per case)",
        flush=True,
    )
    for line in calls.first_errors:
        print(f"    {line}", flush=True)
    return result


def _clock(second: float) -> str:
    return f"{int(second // 3600):02d}:{int(second % 3600 // 60):02d}"


# --- cost per case ---------------------------------------------------------------------------------------


async def idle_rates(
    processes: Processes, pool: asyncpg.Pool, seconds: float = 5.0
) -> tuple[dict[str, float], float]:
    before, rounds = processes.usage(), await statements(pool)
    await asyncio.sleep(seconds)  # measuring what the hub uses while nothing is asked of it
    after = processes.usage()
    wall = after.at - before.at
    return (
        {k: v / wall for k, v in cpu_between(before, after).items()},
        (await statements(pool) - rounds) / wall,
    )


async def case_cost(
    name: str,
    count: int,
    one: Callable[[int], Awaitable[None]],
    processes: Processes,
    pool: asyncpg.Pool,
    idle: tuple[dict[str, float], float],
    settle: Callable[[], Awaitable[None]] | None = None,
    in_flight: int = 8,
) -> dict[str, Any]:
    before, rounds_before = processes.usage(), await statements(pool)
    await gather_limited([lambda i=i: one(i) for i in range(count)], in_flight)
    if settle is not None:
        await settle()
    after, rounds_after = processes.usage(), await statements(pool)
    wall = after.at - before.at
    rates, idle_rounds = idle
    cpu = {k: max(0.0, v - rates.get(k, 0.0) * wall) for k, v in cpu_between(before, after).items()}
    hub = {k: v for k, v in cpu.items() if k != "bench client"}
    per_case = {k: round(v * 1000 / count, 1) for k, v in sorted(hub.items(), key=lambda kv: -kv[1]) if v > 0}
    rounds = max(0.0, rounds_after - rounds_before - idle_rounds * wall)
    result = {
        "case": name,
        "count": count,
        "seconds": round(wall, 1),
        "cpu_ms_per_case": round(sum(hub.values()) * 1000 / count, 1),
        "cpu_ms_per_case_by_process": per_case,
        "db_round_trips_per_case": round(rounds / count, 1),
    }
    print(
        f"  {name}: {result['cpu_ms_per_case']} CPU-ms and {result['db_round_trips_per_case']} round trips "
        f"per case ({', '.join(f'{k} {v}' for k, v in list(per_case.items())[:4])})",
        flush=True,
    )
    return result


async def costs(
    region: Region,
    pool: asyncpg.Pool,
    processes: Processes,
    slots: Slots,
    idle: tuple[dict[str, float], float],
    scale: float = 1.0,
) -> dict[str, Callable[[], Awaitable[dict[str, Any]]]]:
    """The four cases, each as a function measuring its cost (run once measured, once profiled)."""
    calls = Calls()
    # A case measured alone is its cost, not its latency: an Update answered UNAVAILABLE (its bounded wait
    # ran out on a busy machine) is sent again with the same request id, as a hospital system does.
    player = Player(region, slots, calls, retries=5)
    billing = region.billing_as_workflows()
    quote_act = teleexpertise(paris("2025-10-06 10:00"))
    wanted = {"quote": 400, "booking": 200, "tc": min(48, PRACTITIONERS), "te": 40, "contracts": 20}
    counts = {k: max(4, round(v * scale)) for k, v in wanted.items()}

    async def drained() -> None:
        await outbox_drained(pool)
        await asyncio.sleep(1.0)  # the first workflow task of the last ones started

    async def quote() -> dict[str, Any]:
        async def one(i: int) -> None:
            await calls.timed(
                "QuoteAct",
                billing.QuoteAct(
                    billing_pb2.QuoteActRequest(act=quote_act, patient=f"patients/{uuid.uuid4()}")
                ),
            )

        return await case_cost("quote (QuoteAct)", counts["quote"], one, processes, pool, idle)

    async def booking() -> dict[str, Any]:
        player.future = await slots.between(
            datetime.now(UTC) + timedelta(hours=3), datetime.now(UTC) + timedelta(hours=46), counts["booking"]
        )

        async def one(i: int) -> None:
            slot, rpps = player.next_future_slot()
            await player.book(Chain(steps=[]), slot, rpps, consent=True)

        return await case_cost(
            "booking (BookAppointment + its workflow started)",
            counts["booking"],
            one,
            processes,
            pool,
            idle,
            settle=drained,
        )

    async def teleconsultation() -> dict[str, Any]:
        near = await slots.between(datetime.now(UTC) + HELD_FROM, datetime.now(UTC) + HELD_TO, counts["tc"])
        if len(near) < counts["tc"]:
            raise RuntimeError("not enough slots starting soon for the teleconsultation cases")

        chains = [Chain(steps=[]) for _ in range(counts["tc"])]

        async def one(i: int) -> None:
            await player.book(chains[i], near[i][0], near[i][1], consent=True)

        async def held() -> None:
            await outbox_drained(pool)

            async def consultation(chain: Chain) -> None:
                for op in ("StartTeleconsultation", "CompleteTeleconsultation"):
                    await player.run(
                        chain, Step(at=0, case="", kind="teleconsultation", operation=op, index=0)
                    )
                assert chain.appointment is not None
                await region.temporal.get_workflow_handle(chain.appointment.workflow_id).result()

            await gather_limited([lambda ch=ch: consultation(ch) for ch in chains], 8)

        return await case_cost(
            "complete teleconsultation (booked … billed, reported)",
            counts["tc"],
            one,
            processes,
            pool,
            idle,
            settle=held,
        )

    async def teleexpertise_case() -> dict[str, Any]:
        async def one(i: int) -> None:
            chain = Chain(steps=[])
            for op in (
                "CreateTeleexpertiseRequest",
                "AcceptTeleexpertiseRequest",
                "SubmitTeleexpertiseReport",
            ):
                await player.run(chain, Step(at=0, case="", kind="teleexpertise", operation=op, index=0))
            workflow_id = f"teleexpertise-{chain.request.removeprefix('teleexpertiseRequests/')}"
            result: Any = await region.temporal.get_workflow_handle(workflow_id).result()
            if result["billing_state"] != "BILLED":
                raise RuntimeError(f"a téléexpertise was not billed: {result['billing_state']}")

        return await case_cost(
            "complete téléexpertise (requested … billed)", counts["te"], one, processes, pool, idle
        )

    async def contracts_case() -> dict[str, Any]:
        # The two files of the contracts model, each to where an ARS officer's review takes it the same day.
        flows = (
            ("CreateOperatorDeclaration", "GetOperatorDeclaration", "AcknowledgeOperatorDeclaration"),
            ("CreateArsContract", "SubmitArsContract", "GetArsContract", "MarkArsContractComplete"),
        )

        async def one(i: int) -> None:
            for flow in flows:
                chain = Chain(steps=[])
                for op in flow:
                    await player.run(chain, Step(at=0, case="", kind="contracts", operation=op, index=0))

        return await case_cost(
            "contracts casework (a declaration acknowledged, a contract submitted and found complete)",
            counts["contracts"],
            one,
            processes,
            pool,
            idle,
            in_flight=4,
        )

    return {
        "quote": quote,
        "booking": booking,
        "teleconsultation": teleconsultation,
        "teleexpertise": teleexpertise_case,
        "contracts": contracts_case,
    }


# --- profiles --------------------------------------------------------------------------------------------


def py_spy() -> str | None:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else None


async def profiled(
    name: str, run: Callable[[], Awaitable[dict[str, Any]]], targets: list[tuple[str, int]], out: Path
) -> dict[str, Any]:
    """Run a case again while py-spy samples the given processes; collapsed stacks and a summary."""
    binary = py_spy()
    if binary is None:
        return {"case": name, "skipped": "py-spy is not installed"}
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, before the run)
    spies: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    for group, pid in targets:
        path = out / f"{name}-{group}.collapsed.txt"
        spies.append(
            (
                group,
                subprocess.Popen(  # noqa: ASYNC220 (started, not awaited: py-spy samples beside the run)
                    [
                        binary,
                        "record",
                        "--pid",
                        str(pid),
                        "--rate",
                        "200",
                        "--nonblocking",
                        "--format",
                        "raw",
                        "--output",
                        str(path),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                ),
                path,
            )
        )
    await asyncio.sleep(1.0)  # py-spy attaching
    try:
        await run()
    finally:
        for _, spy, _ in spies:
            spy.send_signal(signal.SIGINT)
        for _, spy, _ in spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
    summaries: dict[str, Any] = {}
    for group, spy, path in spies:
        if not path.exists():
            error = spy.stderr.read().decode(errors="replace")[-300:] if spy.stderr else ""
            summaries[group] = {"error": error or "no output"}
            continue
        summaries[group] = summarise_stacks(path.read_text())
    return {"case": name, "processes": summaries}


# Samples of a process waiting (its event loop's select, idle pool threads) and frames every stack has (the
# interpreter's start, the event loop): left out of the summary, which is about where work goes.
IDLE_LEAVES = ("EpollSelector.select (", "_worker (concurrent", "Thread.run (", "Condition.wait (")
FRAME_NOISE = ("<frozen runpy>", "asyncio/", "threading.py", "__main__.py", "concurrent/futures")


def summarise_stacks(collapsed: str, top: int = 12) -> dict[str, Any]:
    """From py-spy's collapsed stacks: the functions holding the most busy samples, inclusive and self."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = idle = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        if stack.rsplit(";", 1)[-1].startswith(IDLE_LEAVES):
            idle += samples
            continue
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0] + ")" if " (" in f else f
            for f in stack.split(";")
        ]
        for frame in set(frames):
            inclusive[frame] += samples
        own[frames[-1]] += samples
    busy = total - idle
    if not busy:
        return {"samples": total, "busy_samples": 0}

    def share(n: int) -> float:
        return round(100 * n / busy, 1)

    return {
        "samples": total,
        "busy_samples": busy,
        "inclusive": [
            (f, share(n))
            for f, n in inclusive.most_common(top * 4)
            if not any(noise in f for noise in FRAME_NOISE) and not f.startswith("<module>")
        ][:top],
        "self": [(f, share(n)) for f, n in own.most_common(top)],
    }


# --- the benchmark ---------------------------------------------------------------------------------------


async def main(env: BenchEnv, hub_dir: Path | None = None) -> None:
    hub_dir = hub_dir or (
        Path(os.environ["PARCOURS_BENCH_HUB"]) if os.environ.get("PARCOURS_BENCH_HUB") else None
    )
    if hub_dir is not None:
        await measure(env, load_hub(hub_dir))
        return
    print("bench load: starting the hub as make run does ...", flush=True)
    with started_hub(env.work_dir) as hub:
        await measure(env, hub)


async def measure(env: BenchEnv, hub: Hub) -> None:
    day = region_day()
    pool = await asyncpg.create_pool(
        hub.database_url, min_size=1, max_size=4, server_settings={"timezone": "UTC"}
    )
    assert pool is not None
    processes = Processes(hub_roots(hub), int(hub.temporal_address.rsplit(":", 1)[1]))
    temporal = await connect_client(
        TemporalSettings(temporal_address=hub.temporal_address, payload_keys=hub.payload_keys)
    )
    region = Region(hub=hub, temporal=temporal)
    results: dict[str, Any] = {
        "hub": hub.description,
        "database": "embedded PostgreSQL with fsync off (bench and test setting only)"
        if hub.local
        else "as deployed",
        "model": {
            "cases_per_weekday": day.cases,
            "operations_per_weekday": dict(sorted(day.operations().items())),
            "peak_hour_calls_per_second": round(peak_hour_rate(day), 3),
            "calls_per_hour": day.per_hour(),
        },
        "phases": [],
        "phase_failures": [],
        "per_case": {},
        "profiles": [],
    }

    def save() -> Path:
        # After each part: a run stopped half-way keeps what it measured.
        return env.write_results("load", results)

    try:
        results["statements_counted"] = await enable_statements(pool)
        await asyncio.sleep(5)  # the services settle after their start (imports, caches, first health checks)
        results["idle_rss_mb"] = {
            g: [round(v, 1) for v in processes.rss_per_process_mb(g)] for g in SERVICE_PROCESSES
        }
        print(f"bench load: idle RSS (MB): {results['idle_rss_mb']}", flush=True)
        # A service's child for rare work (decision documents), while it runs: not a service process.
        results["helper_rss_mb"] = {
            g: [round(v, 1) for v in processes.rss_per_process_mb(g)] for g in HELPER_PROCESSES
        }
        print(f"bench load: seeding {PRACTITIONERS} practitioners' agendas and patients ...", flush=True)
        results["seed"] = await seed(region, PRACTITIONERS)
        print(f"  seeded in {results['seed']['seconds']} s", flush=True)
        slots = Slots(region)
        idle = await idle_rates(processes, pool)
        for speed, seconds in zip(SPEEDS, PHASE_SECONDS, strict=True):
            try:
                results["phases"].append(
                    await replay(region, pool, processes, slots, day, speed, seconds, idle)
                )
            except RuntimeError as failure:
                print(f"  {speed}x: not measured: {failure}", flush=True)
                results["phase_failures"].append({"speed": speed, "reason": str(failure)})
            save()
        print("bench load: cost per case ...", flush=True)
        cases = await costs(region, pool, processes, slots, idle)
        per_case: dict[str, Any] = results["per_case"]
        for name, run in cases.items():
            try:
                per_case[name] = await run()
            except (RuntimeError, grpc.aio.AioRpcError) as failure:
                print(f"  {name}: not measured: {failure}", flush=True)
                results["phase_failures"].append({"case": name, "reason": str(failure)})
            save()
        if PROFILE:
            costliest = sorted(per_case, key=lambda k: -per_case[k]["cpu_ms_per_case"])[:3]
            again = await costs(region, pool, processes, slots, idle, scale=0.5)
            for name in costliest:
                hot = [
                    g
                    for g in per_case[name]["cpu_ms_per_case_by_process"]
                    if g not in ("postgres", "temporal")
                ][:2]
                targets = [(g, processes.pids(g)[0]) for g in hot if processes.pids(g)]
                print(f"bench load: profiling {name} ({', '.join(hot)}) ...", flush=True)
                try:
                    results["profiles"].append(
                        await profiled(name, again[name], targets, env.results_dir / "profiles")
                    )
                except RuntimeError as failure:
                    results["profiles"].append({"case": name, "skipped": str(failure)})
                save()
    finally:
        await region.close()
        await pool.close()
    path = save()
    print(f"bench load: results in {path}", flush=True)
