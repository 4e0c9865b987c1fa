"""What the security scenarios act on: a rightful party's world (a patient, an appointment and a hold, a
téléexpertise request with an attachment, charges, free slots), and every RPC of every service that takes a
patient-bound resource, with a well-formed request for it (the matrix asks them with hidden and random ids;
the fuzzer starts from them)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.protobuf import descriptor_pool, message_factory, timestamp_pb2
from google.protobuf.message import Message
from google.type import (
    date_pb2,  # type: ignore[import-untyped]
    money_pb2,  # type: ignore[import-untyped]
)
from parcours.billing.v1 import billing_pb2
from parcours.contracts.v1 import contracts_pb2 as c
from parcours.directory.v1 import directory_pb2
from parcours.expertise.v1 import expertise_pb2
from parcours.scheduling.v1 import scheduling_pb2 as s
from parcours.type.v1 import practice_pb2

from tests.billing.builders import gp, teleconsultation
from tests.conftest import Minter
from tests.directory.builders import ipp, random_ins, register
from tests.scheduling.helpers import add_rules, every_day, first_free, new_practitioner, new_schedule, stamp
from tests.security.conftest import SecurityHub
from tests.support import LOIRE, bearer, request_id

GP_LOIRE = "10000000101"  # practises at 420000025, GHT Loire (calls through 420000017)
SERVICES = {
    "directory": "parcours.directory.v1.DirectoryService",
    "scheduling": "parcours.scheduling.v1.SchedulingService",
    "expertise": "parcours.expertise.v1.ExpertiseService",
    "billing": "parcours.billing.v1.BillingService",
    "contracts": "parcours.contracts.v1.ContractService",
}


@dataclass(frozen=True)
class Ids:
    """The ids an RPC is given: the world's real ones (hidden from outsiders) or random ones."""

    patient: str
    appointment: str
    held: str
    request: str
    attachment: str
    charge: str
    matricule: str
    ipp: str
    series: str
    waitlist: str
    # The contracts service's cases (a promoter's, a doctor's), a document, an opinion, a decision.
    ars_contract: str
    declaration: str
    review: str
    agrement: str
    document: str
    opinion: str
    decision: str

    def texts(self) -> list[str]:
        # Longest first: a document's name holds its case's.
        return sorted(
            [
                self.patient,
                self.appointment,
                self.held,
                self.request,
                self.attachment,
                self.charge,
                self.matricule,
                self.ipp,
                self.series,
                self.waitlist,
                self.ars_contract,
                self.declaration,
                self.review,
                self.agrement,
                self.document,
                self.opinion,
                self.decision,
            ],
            key=len,
            reverse=True,
        )


def random_ids() -> Ids:
    request = f"teleexpertiseRequests/{uuid.uuid4()}"
    contract = f"arsContracts/{uuid.uuid4()}"
    return Ids(
        patient=f"patients/{uuid.uuid4()}",
        appointment=f"appointments/{uuid.uuid4()}",
        held=f"appointments/{uuid.uuid4()}",
        request=request,
        attachment=f"{request}/attachments/{uuid.uuid4()}",
        charge=f"charges/{uuid.uuid4()}",
        matricule=random_ins().matricule,
        ipp=ipp(),
        series=f"appointmentSeries/{uuid.uuid4()}",
        waitlist=f"waitlistEntries/{uuid.uuid4()}",
        ars_contract=contract,
        declaration=f"operatorDeclarations/{uuid.uuid4()}",
        review=f"intermediaryContractReviews/{uuid.uuid4()}",
        agrement=f"agrementApplications/{uuid.uuid4()}",
        document=f"{contract}/documents/convention",
        opinion=f"{contract}/opinions/{uuid.uuid4()}",
        decision=f"{contract}/decisions/{uuid.uuid4()}",
    )


@dataclass(frozen=True)
class World:
    """What the rightful party (a Loire GP through the Loire system) made: a patient, an appointment, a
    hold, a téléexpertise request with an attachment, charges; and free slots to ask for."""

    hidden: Ids
    slot: str
    other_slot: str


@dataclass(frozen=True)
class Rpc:
    service: str
    method: str
    build: Callable[[World, Ids, str], Message]  # (world, ids, the caller's FINESS) → request
    read: bool = False  # the rightful party's control: it sees the hidden resource
    # Who that rightful party is (`tests/security/test_matrix.py`, RIGHTFUL): the Loire GP, or for the cases
    # the region's ARS officer (a national agrément: its promoter).
    reader: str = "gp"

    @property
    def label(self) -> str:
        return f"{self.service}.{self.method}"


def _record() -> s.TeleconsultationRecord:
    started = datetime.now(UTC) - timedelta(minutes=25)
    return s.TeleconsultationRecord(
        report="Suivi d'HTA en téléconsultation.",
        acts=[s.RecordedAct(code="TCG", description="Téléconsultation de suivi")],
        participants=[
            s.RecordParticipant(
                practitioner=f"practitioners/{GP_LOIRE}", role=s.RecordParticipant.ROLE_TELECONSULTANT
            )
        ],
        act_start_time=stamp(started),
        act_end_time=stamp(started + timedelta(minutes=20)),
        no_technical_incident=True,
    )


def _teleexpertise(patient: str) -> expertise_pb2.TeleexpertiseRequestInput:
    return expertise_pb2.TeleexpertiseRequestInput(
        patient=patient,
        patient_consent=True,
        specialty=practice_pb2.SPECIALTY_DERMATOLOGY,
        question="Lésion pigmentée du dos évolutive : exérèse ?",
        clinical_context="Lésion de 8 mm apparue il y a 6 mois, asymétrique.",
        urgency=expertise_pb2.URGENCY_ROUTINE,
        attachments=[
            expertise_pb2.AttachmentInput(title="Photo", media_type="application/pdf", content=b"%PDF-1.4 x")
        ],
    )


def _day(offset: int) -> date_pb2.Date:
    day = datetime.now(UTC).date() + timedelta(days=offset)
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


def _act(finess: str) -> billing_pb2.Act:
    return teleconsultation(datetime.now(UTC) - timedelta(hours=1), gp(GP_LOIRE), establishment=finess)


RPCS: list[Rpc] = [
    # directory
    Rpc(
        "directory", "GetPatient", lambda w, i, f: directory_pb2.GetPatientRequest(name=i.patient), read=True
    ),
    Rpc(
        "directory",
        "UpdatePatient",
        lambda w, i, f: directory_pb2.UpdatePatientRequest(
            request_id=request_id(), name=i.patient, identity_status=directory_pb2.IDENTITY_STATUS_VALIDATED
        ),
    ),
    Rpc(
        "directory",
        "LinkLocalIdentifier",
        lambda w, i, f: directory_pb2.LinkLocalIdentifierRequest(
            request_id=request_id(), name=i.patient, establishment=f"establishments/{f}", ipp="T-MATRIX-1"
        ),
    ),
    Rpc(
        "directory",
        "ResolvePatient",
        lambda w, i, f: directory_pb2.ResolvePatientRequest(matricule=i.matricule),
        read=True,
    ),
    Rpc(
        "directory",
        "ResolvePatient",
        lambda w, i, f: directory_pb2.ResolvePatientRequest(
            local_identifier=directory_pb2.LocalIdentifier(establishment=f"establishments/{LOIRE}", ipp=i.ipp)
        ),
        read=True,
    ),
    # scheduling
    Rpc(
        "scheduling", "GetAppointment", lambda w, i, f: s.GetAppointmentRequest(name=i.appointment), read=True
    ),
    Rpc(
        "scheduling",
        "ListAppointments",
        lambda w, i, f: s.ListAppointmentsRequest(patient=i.patient, page_size=50),
    ),
    Rpc(
        "scheduling",
        "HoldSlot",
        lambda w, i, f: s.HoldSlotRequest(request_id=request_id(), slot=w.slot, patient=i.patient),
    ),
    Rpc(
        "scheduling",
        "ProposeAppointment",
        lambda w, i, f: s.ProposeAppointmentRequest(request_id=request_id(), slot=w.slot, patient=i.patient),
    ),
    Rpc(
        "scheduling",
        "BookAppointment",
        lambda w, i, f: s.BookAppointmentRequest(request_id=request_id(), slot=w.slot, patient=i.patient),
    ),
    Rpc(
        "scheduling",
        "BookAppointment",
        lambda w, i, f: s.BookAppointmentRequest(
            request_id=request_id(), appointment=i.held, patient=w.hidden.patient
        ),
    ),
    Rpc(
        "scheduling",
        "CancelAppointment",
        lambda w, i, f: s.CancelAppointmentRequest(
            request_id=request_id(),
            name=i.appointment,
            initiator=s.PARTY_PATIENT,
            reason=s.CANCELLATION_REASON_PATIENT_REQUEST,
        ),
    ),
    Rpc(
        "scheduling",
        "RescheduleAppointment",
        lambda w, i, f: s.RescheduleAppointmentRequest(
            request_id=request_id(),
            name=i.appointment,
            slot=w.other_slot,
            initiator=s.PARTY_PATIENT,
        ),
    ),
    Rpc(
        "scheduling",
        "RecordConsent",
        lambda w, i, f: s.RecordConsentRequest(
            request_id=request_id(), name=i.appointment, consent=s.ConsentInput(method=s.CONSENT_METHOD_ORAL)
        ),
    ),
    Rpc(
        "scheduling",
        "StartTeleconsultation",
        lambda w, i, f: s.StartTeleconsultationRequest(request_id=request_id(), name=i.appointment),
    ),
    Rpc(
        "scheduling",
        "CompleteTeleconsultation",
        lambda w, i, f: s.CompleteTeleconsultationRequest(
            request_id=request_id(), name=i.appointment, record=_record()
        ),
    ),
    Rpc(
        "scheduling",
        "MarkAppointmentEnteredInError",
        lambda w, i, f: s.MarkAppointmentEnteredInErrorRequest(
            request_id=request_id(), name=i.appointment, note="erreur de saisie"
        ),
    ),
    Rpc(
        "scheduling",
        "CreateAppointmentSeries",
        lambda w, i, f: s.CreateAppointmentSeriesRequest(
            request_id=request_id(),
            appointment_series=s.AppointmentSeriesInput(
                first_slot=w.slot, occurrence_count=2, interval_days=1, patient=i.patient
            ),
        ),
    ),
    Rpc(
        "scheduling",
        "GetAppointmentSeries",
        lambda w, i, f: s.GetAppointmentSeriesRequest(name=i.series),
        read=True,
    ),
    Rpc(
        "scheduling",
        "ListAppointmentSeries",
        lambda w, i, f: s.ListAppointmentSeriesRequest(patient=i.patient, page_size=50),
    ),
    Rpc(
        "scheduling",
        "CancelAppointmentSeries",
        lambda w, i, f: s.CancelAppointmentSeriesRequest(
            request_id=request_id(),
            name=i.series,
            initiator=s.PARTY_PATIENT,
            reason=s.CANCELLATION_REASON_PATIENT_REQUEST,
        ),
    ),
    Rpc(
        "scheduling",
        "CreateWaitlistEntry",
        lambda w, i, f: s.CreateWaitlistEntryRequest(
            request_id=request_id(),
            waitlist_entry=s.WaitlistEntryInput(
                patient=i.patient, specialty=practice_pb2.SPECIALTY_CARDIOLOGY
            ),
        ),
    ),
    Rpc(
        "scheduling",
        "GetWaitlistEntry",
        lambda w, i, f: s.GetWaitlistEntryRequest(name=i.waitlist),
        read=True,
    ),
    Rpc(
        "scheduling",
        "ListWaitlistEntries",
        lambda w, i, f: s.ListWaitlistEntriesRequest(patient=i.patient, page_size=50),
    ),
    Rpc(
        "scheduling",
        "CancelWaitlistEntry",
        lambda w, i, f: s.CancelWaitlistEntryRequest(request_id=request_id(), name=i.waitlist),
    ),
    Rpc(
        "scheduling",
        "AcceptWaitlistOffer",
        lambda w, i, f: s.AcceptWaitlistOfferRequest(request_id=request_id(), name=i.waitlist),
    ),
    # expertise
    Rpc(
        "expertise",
        "CreateTeleexpertiseRequest",
        lambda w, i, f: expertise_pb2.CreateTeleexpertiseRequestRequest(
            request_id=request_id(), teleexpertise_request=_teleexpertise(i.patient)
        ),
    ),
    Rpc(
        "expertise",
        "GetTeleexpertiseRequest",
        lambda w, i, f: expertise_pb2.GetTeleexpertiseRequestRequest(name=i.request),
        read=True,
    ),
    *(
        Rpc(
            "expertise",
            method,
            lambda w, i, f, m=message: m(request_id=request_id(), name=i.request),  # type: ignore[misc]
        )
        for method, message in (
            ("AcceptTeleexpertiseRequest", expertise_pb2.AcceptTeleexpertiseRequestRequest),
        )
    ),
    *(
        Rpc(
            "expertise",
            method,
            lambda w, i, f, m=message: m(request_id=request_id(), name=i.request, reason="absent"),  # type: ignore[misc]
        )
        for method, message in (
            ("DeclineTeleexpertiseRequest", expertise_pb2.DeclineTeleexpertiseRequestRequest),
            ("HandBackTeleexpertiseRequest", expertise_pb2.HandBackTeleexpertiseRequestRequest),
            ("CancelTeleexpertiseRequest", expertise_pb2.CancelTeleexpertiseRequestRequest),
        )
    ),
    *(
        Rpc(
            "expertise",
            method,
            lambda w, i, f, m=message: m(request_id=request_id(), name=i.request, text="Depuis quand ?"),  # type: ignore[misc]
        )
        for method, message in (
            ("AskTeleexpertiseQuestion", expertise_pb2.AskTeleexpertiseQuestionRequest),
            ("AnswerTeleexpertiseQuestion", expertise_pb2.AnswerTeleexpertiseQuestionRequest),
        )
    ),
    Rpc(
        "expertise",
        "SubmitTeleexpertiseReport",
        lambda w, i, f: expertise_pb2.SubmitTeleexpertiseReportRequest(
            request_id=request_id(),
            name=i.request,
            report=expertise_pb2.ReportInput(
                summary="Exérèse conseillée.", acts_and_prescriptions=["Exérèse"]
            ),
        ),
    ),
    Rpc(
        "expertise",
        "ListTeleexpertiseMessages",
        lambda w, i, f: expertise_pb2.ListTeleexpertiseMessagesRequest(parent=i.request),
        read=True,
    ),
    Rpc(
        "expertise",
        "GetTeleexpertiseAttachment",
        lambda w, i, f: expertise_pb2.GetTeleexpertiseAttachmentRequest(name=i.attachment),
        read=True,
    ),
    Rpc(
        "expertise",
        "ListTeleexpertiseEvents",
        lambda w, i, f: expertise_pb2.ListTeleexpertiseEventsRequest(parent=i.request),
        read=True,
    ),
    Rpc(
        "expertise",
        "ListTeleexpertiseNotifications",
        lambda w, i, f: expertise_pb2.ListTeleexpertiseNotificationsRequest(teleexpertise_request=i.request),
    ),
    # billing
    Rpc("billing", "QuoteAct", lambda w, i, f: billing_pb2.QuoteActRequest(patient=i.patient, act=_act(f))),
    Rpc(
        "billing",
        "RecordAct",
        lambda w, i, f: billing_pb2.RecordActRequest(
            request_id=request_id(), act_id=f"act-{uuid.uuid4()}", patient=i.patient, act=_act(f)
        ),
    ),
    Rpc("billing", "GetCharge", lambda w, i, f: billing_pb2.GetChargeRequest(name=i.charge), read=True),
    Rpc(
        "billing",
        "ListCharges",
        lambda w, i, f: billing_pb2.ListChargesRequest(
            patient=i.patient, page_size=50, start_date=_day(-3), end_date=_day(1)
        ),
    ),
    Rpc(
        "billing",
        "ReverseCharge",
        lambda w, i, f: billing_pb2.ReverseChargeRequest(
            request_id=request_id(), name=i.charge, reason=billing_pb2.REVERSAL_REASON_ENTERED_IN_ERROR
        ),
    ),
]


# --- contracts: every RPC bound to a case (or to one of its documents, opinions, decisions) ----------------

CONTRACTS = "parcours.contracts.v1.ContractService"
# What each case-bound method acts on: the case of its kind, or the one named here; the ARS contract else.
_CASE_OF_KIND = {
    "ArsContract": "ars_contract",
    "OperatorDeclaration": "declaration",
    "IntermediaryContract": "review",
    "Agrement": "agrement",
}
_TARGET = {"GetCaseDocument": "document", "GiveCaseOpinion": "opinion", "RevokeCaseOpinion": "opinion"}
_TARGET["GetCaseDecision"] = "decision"
# Not bound to a case: creations, policies, coverage, the company register, lists, counters and templates
# (the lists and counters are test_matrix's own test: hidden cases never move them).
_UNBOUND = {"ListCases", "CountCases", "CreateMotivationTemplate", "ListMotivationTemplates"}
# The rightful party's reads: the case's region's ARS officer (a national agrément: its promoter).
_READS = {
    "GetArsContract",
    "GetOperatorDeclaration",
    "GetIntermediaryContractReview",
    "GetAgrementApplication",
    "GetCaseDocument",
    "ListCaseEvents",
    "ListCaseMessages",
    "ListCaseDocuments",
    "ListCaseOpinions",
    "ListCaseComments",
}
_STRINGS = {
    "motivation": "Le dossier ne comporte pas la convention signée.",
    "items": "La convention signée par les trois EHPAD",
    "change_id": "avenant-1",
    "summary": "Un site de plus",
    "note": "Conforme au modèle du CNOM",
    "assignee": "staff/bob",
    "expert": "staff/bob",
    "question": "Le protocole est-il sûr ?",
    "text": "Pouvez-vous préciser le nombre de résidents ?",
    "reason": "Avis demandé par erreur",
    "document_id": "annexe",
    "title": "Annexe technique",
    "media_type": "application/pdf",
}


def _case_bound(method: str) -> str | None:
    """The Ids field a contracts method is given (None: not bound to a case)."""
    if method in _TARGET:
        return _TARGET[method]
    if method == "BatchAcknowledgeOperatorDeclarations":
        return "declaration"
    unbound = (
        method in _UNBOUND
        or method == "EvaluateActivity"
        or (method.startswith("Create") and method != "CreateCaseDocument")
        or (method.startswith("List") and not method.startswith("ListCase"))
        or any(word in method for word in ("Policy", "Coverage", "Compan"))
    )
    if unbound:
        return None
    return next((field for kind, field in _CASE_OF_KIND.items() if kind in method), "ars_contract")


def _fill(message: Message, target: str) -> Message:
    """A well-formed request acting on `target`: every field the service asks for, with a plausible value."""
    today = datetime.now(UTC).date()
    for field in message.DESCRIPTOR.fields:
        name = field.name
        repeated = field.is_repeated
        value: object = None
        if name in ("name", "parent", "names"):
            value = target
        elif name == "request_id":
            value = request_id()
        elif name == "page_size":
            value = 50
        elif field.type == field.TYPE_ENUM:
            value = c.CLAUSE_STATUS_SATISFIED if name == "status" else 1
        elif name in _STRINGS:
            value = _STRINGS[name]
        elif name == "content":
            value = b"%PDF-1.4 annexe"
        elif field.message_type is not None and field.message_type.full_name == "google.type.Date":
            day = today + timedelta(days={"start_date": 10, "effective_date": 1}.get(name, 400))
            getattr(message, name).CopyFrom(date_pb2.Date(year=day.year, month=day.month, day=day.day))
        elif field.message_type is not None and field.message_type.full_name == "google.protobuf.Timestamp":
            getattr(message, name).FromDatetime(datetime.now(UTC) + timedelta(days=7))
        if value is not None:
            if repeated:
                getattr(message, name).append(value)
            else:
                setattr(message, name, value)
    return message


def _contracts_rpcs() -> list[Rpc]:
    found: list[Rpc] = []
    for method in descriptor_pool.Default().FindServiceByName(CONTRACTS).methods:
        target = _case_bound(method.name)
        if target is None:
            continue
        message_type = message_factory.GetMessageClass(method.input_type)
        found.append(
            Rpc(
                "contracts",
                method.name,
                lambda w, i, f, m=message_type, t=target: _fill(m(), getattr(i, t)),  # type: ignore[misc]
                read=method.name in _READS,
                reader="promoter" if target == "agrement" else "officer",
            )
        )
    # The doctor's own review, read by the doctor: their events and documents too.
    found += [
        Rpc(
            "contracts",
            method,
            lambda w, i, f, m=message: _fill(m(), i.review),  # type: ignore[misc]
            read=True,
        )
        for method, message in (
            ("ListCaseEvents", c.ListCaseEventsRequest),
            ("ListCaseMessages", c.ListCaseMessagesRequest),
        )
    ]
    return found


RPCS += _contracts_rpcs()
PROMOTER_STAFF = "promoter-loire"  # the Loire establishment's promoter (staff token, PROMOTER role)
OFFICER_84 = "ars-84-officer"  # region 84's ARS officer, through the console


async def make_cases(hub: SecurityHub, mint: Minter) -> dict[str, str]:
    """The contracts cases of a rightful party, made through the API: the Loire establishment's ARS contract
    (submitted with a document; a message, a comment and an expert's opinion asked) and operator
    declaration, a Loire doctor's intermediary contract review, and an agrément application filed by the Loire
    promoter for a company the hub registered. Region 84, département 42."""
    promoter = bearer(mint(staff=PROMOTER_STAFF, roles=["promoter"]))
    doctor = bearer(mint(rpps=GP_LOIRE))
    officer = bearer(mint(staff=OFFICER_84, roles=["ars_officer"], region="84"))
    operator = bearer(mint(staff="ops-security-cases", roles=["hub_operator"]))
    mine = hub.contracts(LOIRE)
    today = datetime.now(UTC).date()

    def day(offset: int) -> date_pb2.Date:
        found = today + timedelta(days=offset)
        return date_pb2.Date(year=found.year, month=found.month, day=found.day)

    contract = (
        await mine.CreateArsContract(
            c.CreateArsContractRequest(
                request_id=request_id(),
                ars_contract=c.ArsContract(
                    region="regions/84",
                    departement="42",
                    title="Téléconsultation en EHPAD",
                    description="Téléconsultations programmées pour les résidents de trois EHPAD.",
                    activity=c.Activity(
                        act_type=billing_pb2.ACT_TYPE_TELECONSULTATION,
                        offerer=c.OFFERER_ESTABLISHMENT,
                        in_parcours=False,
                    ),
                    requested_start_date=day(10),
                    requested_end_date=day(400),
                ),
            ),
            metadata=promoter,
        )
    ).ars_contract
    document = (
        await mine.CreateCaseDocument(
            c.CreateCaseDocumentRequest(
                request_id=request_id(),
                parent=contract.name,
                document_id="convention",
                document_type=c.DOCUMENT_TYPE_CONVENTION,
                title="Convention entre les acteurs",
                media_type="application/pdf",
                content=b"%PDF-1.4 convention",
            ),
            metadata=promoter,
        )
    ).document
    await mine.SubmitArsContract(
        c.SubmitArsContractRequest(request_id=request_id(), name=contract.name), metadata=promoter
    )
    await mine.PostCaseMessage(
        c.PostCaseMessageRequest(request_id=request_id(), parent=contract.name, text="Bonjour"),
        metadata=promoter,
    )
    console = hub.contracts("component:console")
    opinion = (
        await console.RequestCaseOpinion(
            c.RequestCaseOpinionRequest(
                request_id=request_id(),
                parent=contract.name,
                expert="staff/ars-84-expert",
                question="Le protocole est-il sûr ?",
                due_time=timestamp_pb2.Timestamp(seconds=int(datetime.now(UTC).timestamp()) + 7 * 86_400),
            ),
            metadata=officer,
        )
    ).opinion
    await console.AddCaseComment(
        c.AddCaseCommentRequest(request_id=request_id(), parent=contract.name, text="À instruire"),
        metadata=officer,
    )
    declaration = (
        await mine.CreateOperatorDeclaration(
            c.CreateOperatorDeclarationRequest(
                request_id=request_id(),
                operator_declaration=c.OperatorDeclaration(
                    region="regions/84",
                    departement="42",
                    indications=[c.INDICATION_HEART_FAILURE],
                    device="CardioSuivi 3",
                    device_on_latm_list=True,
                    operator_level=billing_pb2.OPERATOR_LEVEL_1,
                ),
            ),
            metadata=promoter,
        )
    ).operator_declaration
    review = (
        await mine.CreateIntermediaryContractReview(
            c.CreateIntermediaryContractReviewRequest(
                request_id=request_id(),
                intermediary_contract_review=c.IntermediaryContractReview(
                    region="regions/84",
                    territory="42",
                    company_siren="912345678",
                    company_name="MédiConsult SAS",
                    offer="Téléconsultations non programmées en soirée pour les abonnés d'une mutuelle.",
                    remuneration_per_act=money_pb2.Money(currency_code="EUR", units=18),
                ),
            ),
            metadata=doctor,
        )
    ).intermediary_contract_review
    siren = f"{uuid.uuid4().int % 10**9:09d}"
    company = (
        await hub.contracts(LOIRE).CreateTeleconsultationCompany(
            c.CreateTeleconsultationCompanyRequest(
                request_id=request_id(),
                teleconsultation_company=c.TeleconsultationCompany(
                    name=f"teleconsultationCompanies/{siren}", legal_name="Téléconsult Santé SAS"
                ),
            ),
            metadata=operator,
        )
    ).teleconsultation_company
    agrement = (
        await mine.CreateAgrementApplication(
            c.CreateAgrementApplicationRequest(
                request_id=request_id(), agrement_application=c.AgrementApplication(company=company.name)
            ),
            metadata=promoter,
        )
    ).agrement_application
    return {
        "ars_contract": contract.name,
        "declaration": declaration.name,
        "review": review.name,
        "agrement": agrement.name,
        "document": document.name,
        "opinion": opinion.name,
        "decision": f"{contract.name}/decisions/{uuid.uuid4()}",
    }


async def make_world(hub: SecurityHub, mint: Minter) -> World:
    """A rightful party's world, made through the APIs as that party (and the hub) would."""
    operator = bearer(mint(staff="ops-security-world", roles=["hub_operator"]))
    gp_token = bearer(mint(rpps=GP_LOIRE))
    ins = random_ins()
    patient = await register(hub.directory(LOIRE), operator, LOIRE, ins)
    local_ipp = next(i.ipp for i in patient.local_identifiers if i.establishment == f"establishments/{LOIRE}")

    rpps = await new_practitioner(hub.directory(LOIRE), operator, LOIRE)
    schedule = await new_schedule(hub.scheduling(LOIRE), operator, rpps, LOIRE, horizon_days=3)
    await add_rules(hub.scheduling(LOIRE), operator, schedule.name, every_day())
    agenda = hub.scheduling(LOIRE)
    booked_slot = await first_free(agenda, gp_token, rpps, timedelta(hours=2))
    booked = await agenda.BookAppointment(
        s.BookAppointmentRequest(request_id=request_id(), slot=booked_slot.name, patient=patient.name),
        metadata=gp_token,
    )
    held_slot = await first_free(agenda, gp_token, rpps, timedelta(hours=6))
    held = await agenda.HoldSlot(
        s.HoldSlotRequest(request_id=request_id(), slot=held_slot.name, patient=patient.name),
        metadata=gp_token,
    )
    slot = await first_free(agenda, gp_token, rpps, timedelta(hours=10))
    other_slot = await first_free(agenda, gp_token, rpps, timedelta(hours=14))
    # A daily series of two after the other slots (the agenda offers three days).
    series_slot = await first_free(agenda, gp_token, rpps, timedelta(hours=18))
    series = await agenda.CreateAppointmentSeries(
        s.CreateAppointmentSeriesRequest(
            request_id=request_id(),
            appointment_series=s.AppointmentSeriesInput(
                first_slot=series_slot.name, occurrence_count=2, interval_days=1, patient=patient.name
            ),
        ),
        metadata=gp_token,
    )
    waiting = await agenda.CreateWaitlistEntry(
        s.CreateWaitlistEntryRequest(
            request_id=request_id(),
            waitlist_entry=s.WaitlistEntryInput(
                patient=patient.name, specialty=practice_pb2.SPECIALTY_CARDIOLOGY
            ),
        ),
        metadata=gp_token,
    )

    created = await hub.expertise(LOIRE).CreateTeleexpertiseRequest(
        expertise_pb2.CreateTeleexpertiseRequestRequest(
            request_id=request_id(), teleexpertise_request=_teleexpertise(patient.name)
        ),
        metadata=gp_token,
    )
    case = created.teleexpertise_request
    recorded = await hub.billing("component:workflows").RecordAct(
        billing_pb2.RecordActRequest(
            request_id=request_id(), act_id=f"act-{uuid.uuid4()}", patient=patient.name, act=_act(LOIRE)
        )
    )
    return World(
        hidden=Ids(
            patient=patient.name,
            appointment=booked.appointment.name,
            held=held.appointment.name,
            request=case.name,
            attachment=case.attachments[0].name,
            charge=recorded.charges[0].name,
            matricule=ins.matricule,
            ipp=local_ipp,
            series=series.appointment_series.name,
            waitlist=waiting.waitlist_entry.name,
            **await make_cases(hub, mint),
        ),
        slot=slot.name,
        other_slot=other_slot.name,
    )


def response_type(service: str, method: str) -> type[Message]:
    descriptor = descriptor_pool.Default().FindMethodByName(f"{SERVICES[service]}.{method}")
    return message_factory.GetMessageClass(descriptor.output_type)


def request_type(service: str, method: str) -> type[Message]:
    descriptor = descriptor_pool.Default().FindMethodByName(f"{SERVICES[service]}.{method}")
    return message_factory.GetMessageClass(descriptor.input_type)
