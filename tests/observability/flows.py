"""What users do on the hub, as their systems call it: a téléexpertise asked, accepted and answered; a
teleconsultation booked, started and completed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, timedelta

from google.type import date_pb2
from parcours.billing.v1 import billing_pb2
from parcours.contracts.v1 import contracts_pb2 as c
from parcours.contracts.v1 import contracts_pb2_grpc
from parcours.directory.v1 import directory_pb2_grpc
from parcours.expertise.v1 import expertise_pb2_grpc
from parcours.scheduling.v1 import scheduling_pb2 as s
from parcours.scheduling.v1 import scheduling_pb2_grpc

from services.directory.demo import DEMO_PATIENTS
from tests.conftest import Minter
from tests.expertise.conftest import Actor
from tests.observability.conftest import Hub
from tests.scheduling.helpers import add_rules, every_day, first_free, new_practitioner, new_schedule
from tests.scheduling.test_teleconsultation_workflow import record
from tests.support import bearer, request_id

PATIENT = DEMO_PATIENTS[0]  # known at 420000017 (GHT Loire)
PATIENT_NAME = f"patients/{PATIENT.patient_id}"
GP = "10000000101"  # a GP of GHT Loire, the patient's médecin traitant
DERMATOLOGIST = "10000002001"  # the GHT Loire dermatology pool
QUESTION = "Lésion pigmentée du dos évolutive chez Mme Chavanol : exérèse ?"
REPORT = "Naevus atypique de Mme Chavanol : exérèse conseillée."
CLINICAL_RECORD = "Patiente vue en téléconsultation pour suivi d'HTA. Tension bien contrôlée."


def actor(hub: Hub, mint: Minter, rpps: str) -> Actor:
    return Actor(
        rpps=rpps,
        stub=expertise_pb2_grpc.ExpertiseServiceStub(hub.channel("expertise")),
        metadata=bearer(mint(rpps=rpps)),
    )


@dataclass
class Expertise:
    name: str
    requester: Actor
    expert: Actor

    @property
    def workflow_id(self) -> str:
        return "teleexpertise-" + self.name.removeprefix("teleexpertiseRequests/")


async def ask(hub: Hub, mint: Minter) -> Expertise:
    """A GP asks the dermatology pool of GHT Loire about the demo patient."""
    requester, expert = actor(hub, mint, GP), actor(hub, mint, DERMATOLOGIST)
    created = await requester.create(
        **{"patient": PATIENT_NAME, "question": QUESTION, "specialty": 4}  # SPECIALTY_DERMATOLOGY
    )
    return Expertise(created.name, requester, expert)


async def answer(case: Expertise) -> None:
    """The dermatologist accepts, then reports (billing follows)."""
    await case.expert.accept(case.name)
    await case.expert.report(case.name, summary=REPORT)


@dataclass
class Teleconsultation:
    appointment: s.Appointment
    rpps: str
    doctor: tuple[tuple[str, str], ...]

    @property
    def name(self) -> str:
        return self.appointment.name


def scheduling(hub: Hub) -> scheduling_pb2_grpc.SchedulingServiceStub:
    return scheduling_pb2_grpc.SchedulingServiceStub(hub.channel("scheduling"))


async def book(hub: Hub, mint: Minter) -> Teleconsultation:
    """A new GP of GHT Loire opens an agenda; the front desk books its first slot for the demo patient."""
    operator = bearer(mint(staff=f"ops-{uuid.uuid4().hex[:6]}", roles=["hub_operator"]))
    directory = directory_pb2_grpc.DirectoryServiceStub(hub.channel("directory"))
    stub = scheduling(hub)
    rpps = await new_practitioner(directory, operator, "420000017")
    doctor = bearer(mint(rpps=rpps))
    schedule = await new_schedule(stub, operator, rpps, "420000017")
    await add_rules(stub, operator, schedule.name, every_day())
    slot = await first_free(stub, doctor, rpps)
    booked = await stub.BookAppointment(
        s.BookAppointmentRequest(
            request_id=request_id(),
            slot=slot.name,
            patient=PATIENT_NAME,
            requester=f"practitioners/{GP}",
            treating_physician=f"practitioners/{GP}",
            consent=s.ConsentInput(method=s.CONSENT_METHOD_ELECTRONIC),
        ),
        metadata=bearer(mint(staff="front-desk-forez")),
    )
    return Teleconsultation(booked.appointment, rpps, doctor)


async def hold(hub: Hub, case: Teleconsultation) -> None:
    """The teleconsultant starts it, then completes it with the R.6316-4 record (billing follows)."""
    stub = scheduling(hub)
    await stub.StartTeleconsultation(
        s.StartTeleconsultationRequest(request_id=request_id(), name=case.name), metadata=case.doctor
    )
    await stub.CompleteTeleconsultation(
        s.CompleteTeleconsultationRequest(
            request_id=request_id(), name=case.name, record=record(case.rpps, report=CLINICAL_RECORD)
        ),
        metadata=case.doctor,
    )


# What no span, metric or search attribute may carry: the patient's identity, the case's free text.
FORBIDDEN = (
    str(PATIENT.patient_id),
    PATIENT.matricule,
    PATIENT.birth_family_name,
    PATIENT.birth_given_names,
    PATIENT.birth_date.isoformat(),
    *(local.ipp for local in PATIENT.local_identifiers),
    "Chavanol",
    "Lésion pigmentée",
    "Naevus atypique",
    "Tension bien contrôlée",
)


async def file_contract(hub: Hub, mint: Minter) -> str:
    """Centre hospitalier du Forez (GHT Loire) files an ARS contract for teleconsultations in EHPAD and
    submits it: the workflow id of the case, its completeness check open."""
    promoter = contracts_pb2_grpc.ContractServiceStub(hub.channel("contracts"))
    metadata = bearer(mint(staff="promoter-forez", roles=["promoter"]))
    today = date.today()
    start, end = today + timedelta(days=30), today + timedelta(days=30 + 3 * 365)
    created = await promoter.CreateArsContract(
        c.CreateArsContractRequest(
            request_id=request_id(),
            ars_contract=c.ArsContract(
                region="regions/84",
                departement="42",
                ght="ghts/ght-loire",
                title="Téléconsultation en EHPAD",
                description="Téléconsultations programmées pour les résidents de trois EHPAD.",
                activity=c.Activity(
                    act_type=billing_pb2.ACT_TYPE_TELECONSULTATION,
                    offerer=c.OFFERER_ESTABLISHMENT,
                    in_parcours=False,
                ),
                requested_start_date=date_pb2.Date(year=start.year, month=start.month, day=start.day),
                requested_end_date=date_pb2.Date(year=end.year, month=end.month, day=end.day),
            ),
        ),
        metadata=metadata,
    )
    name = created.ars_contract.name
    await promoter.SubmitArsContract(
        c.SubmitArsContractRequest(request_id=request_id(), name=name), metadata=metadata
    )
    return "ars-contract-" + name.removeprefix("arsContracts/")
