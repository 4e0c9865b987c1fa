"""Workers killed with SIGKILL at every step of a case: a téléexpertise (created, accepted, asked, answered,
reported, billed) and a teleconsultation (booked, started, completed, billed and reported). At each step the
calls of several cases are in flight when the worker is killed after a random instant; a new worker starts at
once, and the clients retry what answered UNAVAILABLE with the same request id, as hospital systems do. Every
case completes, billing holds each act once, and no step waits out a whole activity timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from google.type import date_pb2
from parcours.billing.v1 import billing_pb2
from parcours.expertise.v1 import expertise_pb2 as e
from parcours.scheduling.v1 import scheduling_pb2 as s
from parcours.type.v1 import practice_pb2

from services.expertise.models import CaseResult
from services.scheduling.models import TeleconsultationOutcome
from tests.chaos.conftest import Scale
from tests.chaos.stack import ChaosStack, Outcomes, WorkerProcess, case_result, patiently
from tests.scheduling.helpers import add_rules, every_day, new_schedule, stamp
from tests.support import LOIRE, bearer, request_id

GP = "10000000101"  # demo GP of GHT Loire: requester of the téléexpertises, médecin traitant
DERM_LOIRE = "10000002001"  # GHT Loire's dermatology pool
PARIS = ZoneInfo("Europe/Paris")
# A kill lands at a random instant this soon after the step's calls are sent.
KILL_WITHIN_SECONDS = 0.3
CASE_SECONDS = 120.0


@dataclass
class Kills:
    """The kills of one worker and how long each step took, from its calls to their last answer."""

    worker: WorkerProcess
    chaos: ChaosStack
    steps: dict[str, list[float]] = field(default_factory=dict)
    count: int = 0

    async def during(self, step: str, calls: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
        """Send `calls`, SIGKILL the worker at a random instant, start a new one, await the answers."""
        started = time.perf_counter()
        pending = [asyncio.ensure_future(c()) for c in calls]
        await asyncio.sleep(self.chaos.rng.uniform(0, KILL_WITHIN_SECONDS))
        await self.worker.kill()
        await self.worker.restart()
        self.count += 1
        answers = await asyncio.gather(*pending)
        self.steps.setdefault(step, []).append(time.perf_counter() - started)
        return answers

    def slowest(self) -> str:
        step, took = max(((k, max(v)) for k, v in self.steps.items()), key=lambda kv: kv[1])
        return f"slowest step {took:.1f} s ({step})"


async def charges_of(chaos: ChaosStack, patient: str) -> list[billing_pb2.Charge]:
    today = datetime.now(UTC).astimezone(PARIS).date()
    day = date_pb2.Date(year=today.year, month=today.month, day=today.day)
    reply = await chaos.billing_for_hub().ListCharges(
        billing_pb2.ListChargesRequest(patient=patient, start_date=day, end_date=day, page_size=100)
    )
    return list(reply.charges)


# --- téléexpertise --------------------------------------------------------------------------------------


# At full scale (make chaos) the 20 rounds run for minutes, past the suite's 300 s per test.
@pytest.mark.timeout(1800)
async def test_each_worker_killed_at_every_step_of_its_cases(
    chaos: ChaosStack, scale: Scale, figures: Callable[[str], None]
) -> None:
    # Both workers at once: each its own cases, kills and figures.
    rounds, per_round = scale(test=1, full=20), scale(test=2, full=3)
    async with asyncio.TaskGroup() as both:
        both.create_task(teleexpertise_kills(chaos, rounds, per_round, figures))
        both.create_task(teleconsultation_kills(chaos, rounds, per_round, figures))


async def teleexpertise_kills(
    chaos: ChaosStack, rounds: int, per_round: int, figures: Callable[[str], None]
) -> None:
    kills = Kills(chaos.workers["teleexpertise"], chaos)
    outcomes = Outcomes()
    stub = chaos.expertise()
    gp, derm = chaos.practitioner(GP), chaos.practitioner(DERM_LOIRE)
    completed = duplicates = 0
    for _ in range(rounds):
        patients = [(await chaos.new_patient(by=GP))[0] for _ in range(per_round)]

        def create(patient: str) -> Callable[[], Awaitable[Any]]:
            request = e.CreateTeleexpertiseRequestRequest(
                request_id=request_id(),
                teleexpertise_request=e.TeleexpertiseRequestInput(
                    patient=patient,
                    patient_consent=True,
                    specialty=practice_pb2.SPECIALTY_DERMATOLOGY,
                    question="Lésion pigmentée du dos évolutive : exérèse ?",
                    clinical_context="Lésion de 8 mm apparue il y a 6 mois, asymétrique.",
                    urgency=e.URGENCY_ROUTINE,
                ),
            )
            return lambda: patiently(lambda: stub.CreateTeleexpertiseRequest(request, metadata=gp), outcomes)

        created = await kills.during("create", [create(p) for p in patients])
        names = [c.teleexpertise_request.name for c in created]

        def change(method: str, request: Any, who: Any) -> Callable[[], Awaitable[Any]]:
            return lambda: patiently(lambda: getattr(stub, method)(request, metadata=who), outcomes)

        await kills.during(
            "accept",
            [
                change(
                    "AcceptTeleexpertiseRequest",
                    e.AcceptTeleexpertiseRequestRequest(request_id=request_id(), name=n),
                    derm,
                )
                for n in names
            ],
        )
        await kills.during(
            "ask",
            [
                change(
                    "AskTeleexpertiseQuestion",
                    e.AskTeleexpertiseQuestionRequest(
                        request_id=request_id(), name=n, text="Photo en lumière polarisée ?"
                    ),
                    derm,
                )
                for n in names
            ],
        )
        await kills.during(
            "answer",
            [
                change(
                    "AnswerTeleexpertiseQuestion",
                    e.AnswerTeleexpertiseQuestionRequest(
                        request_id=request_id(), name=n, text="Jointe au dossier."
                    ),
                    gp,
                )
                for n in names
            ],
        )
        await kills.during(
            "report",
            [
                change(
                    "SubmitTeleexpertiseReport",
                    e.SubmitTeleexpertiseReportRequest(
                        request_id=request_id(),
                        name=n,
                        report=e.ReportInput(summary="Kératose séborrhéique."),
                    ),
                    derm,
                )
                for n in names
            ],
        )

        async def result(name: str) -> CaseResult:
            workflow_id = f"teleexpertise-{name.removeprefix('teleexpertiseRequests/')}"
            handle = chaos.client.get_workflow_handle(workflow_id, result_type=CaseResult)
            return await case_result(handle, CASE_SECONDS)

        results = await kills.during("billing", [lambda n=n: result(n) for n in names])
        for patient, outcome in zip(patients, results, strict=True):
            assert (outcome.state, outcome.billing_state) == ("COMPLETED", "BILLED")
            completed += 1
            charges = sorted((c.code, c.practitioner) for c in await charges_of(chaos, patient))
            expected = [("RQD", f"practitioners/{GP}"), ("TE2", f"practitioners/{DERM_LOIRE}")]
            duplicates += len(charges) - len(expected)
            assert charges == expected
    figures(
        f"SIGKILL of the teleexpertise worker at each of 6 steps (create, accept, ask, answer, report, "
        f"billing), {rounds} rounds × {per_round} cases: {kills.count} kills, {completed}/"
        f"{rounds * per_round} cases completed and billed, {duplicates} duplicate charges, "
        f"{outcomes.retries} client retries; {kills.slowest()}"
    )


# --- teleconsultation -----------------------------------------------------------------------------------


def completion_record(rpps: str) -> s.TeleconsultationRecord:
    # Billing refuses acts in the future of its clock: the act took place just now.
    started = datetime.now(UTC) - timedelta(minutes=25)
    return s.TeleconsultationRecord(
        report="Suivi d'HTA en téléconsultation. Tension bien contrôlée.",
        acts=[s.RecordedAct(code="TCG", description="Téléconsultation de suivi")],
        participants=[
            s.RecordParticipant(
                practitioner=f"practitioners/{rpps}", role=s.RecordParticipant.ROLE_TELECONSULTANT
            )
        ],
        act_start_time=stamp(started),
        act_end_time=stamp(started + timedelta(minutes=20)),
        no_technical_incident=True,
    )


async def teleconsultation_kills(
    chaos: ChaosStack, rounds: int, per_round: int, figures: Callable[[str], None]
) -> None:
    kills = Kills(chaos.workers["teleconsultation"], chaos)
    outcomes = Outcomes()
    stub = chaos.scheduling()
    operator, desk = chaos.operator(), bearer(chaos.mint(staff="front-desk-chaos"))
    rpps = await chaos.new_practitioner()
    doctor = chaos.practitioner(rpps)
    schedule = await new_schedule(stub, operator, rpps, LOIRE, horizon_days=7)
    await add_rules(stub, operator, schedule.name, every_day())
    free = list(
        (
            await stub.SearchSlots(
                s.SearchSlotsRequest(
                    practitioner=f"practitioners/{rpps}",
                    start_time=stamp(datetime.now(UTC) + timedelta(hours=2)),
                    page_size=rounds * per_round,
                ),
                metadata=desk,
            )
        ).slots
    )
    completed = duplicates = 0
    for _ in range(rounds):
        patients = [(await chaos.new_patient(by=GP))[0] for _ in range(per_round)]
        slots, free = free[:per_round], free[per_round:]

        def book(slot: s.Slot, patient: str) -> Callable[[], Awaitable[Any]]:
            request = s.BookAppointmentRequest(
                request_id=request_id(),
                slot=slot.name,
                patient=patient,
                requester=f"practitioners/{GP}",
                treating_physician=f"practitioners/{GP}",
                consent=s.ConsentInput(method=s.CONSENT_METHOD_ELECTRONIC),
            )
            return lambda: patiently(lambda: stub.BookAppointment(request, metadata=desk), outcomes)

        booked = await kills.during("book", [book(x, p) for x, p in zip(slots, patients, strict=True)])
        names = [b.appointment.name for b in booked]

        def step(method: str, request: Any) -> Callable[[], Awaitable[Any]]:
            return lambda: patiently(lambda: getattr(stub, method)(request, metadata=doctor), outcomes)

        await kills.during(
            "start",
            [
                step("StartTeleconsultation", s.StartTeleconsultationRequest(request_id=request_id(), name=n))
                for n in names
            ],
        )
        await kills.during(
            "complete",
            [
                step(
                    "CompleteTeleconsultation",
                    s.CompleteTeleconsultationRequest(
                        request_id=request_id(), name=n, record=completion_record(rpps)
                    ),
                )
                for n in names
            ],
        )

        async def result(appointment: s.Appointment) -> TeleconsultationOutcome:
            handle = chaos.client.get_workflow_handle(
                appointment.workflow_id, result_type=TeleconsultationOutcome
            )
            return await case_result(handle, CASE_SECONDS)

        results = await kills.during(
            "billing and report", [lambda b=b: result(b.appointment) for b in booked]
        )
        for patient, outcome in zip(patients, results, strict=True):
            assert outcome.state == "BILLED", outcome
            completed += 1
            charges = [c.name for c in await charges_of(chaos, patient)]
            duplicates += len(charges) - len(set(outcome.charges))
            assert sorted(charges) == sorted(outcome.charges)
    figures(
        f"SIGKILL of the teleconsultation worker at each of 4 steps (book, start, complete, billing and "
        f"report), {rounds} rounds × {per_round} cases: {kills.count} kills, {completed}/"
        f"{rounds * per_round} cases completed and billed, {duplicates} duplicate charges, "
        f"{outcomes.retries} client retries; {kills.slowest()}"
    )
