"""No patient data leaves through Temporal, the logs or the traces. A patient with names, a NIR and a birth
date of their own goes through a whole téléexpertise and a whole teleconsultation, with free text of their
case in every field that takes some; then the Temporal database (the dev server's SQLite file and its
write-ahead log), every log line the services and workers wrote (the workers' and Temporal's log files, the
in-process services' records) and every span (the in-process services' and the workers' OTLP exports) are
searched for each of them, in the forms they could take. PostgreSQL is where they belong: the same search
finds them in its write-ahead log, which shows the search would see them anywhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from parcours.expertise.v1 import expertise_pb2 as e
from parcours.scheduling.v1 import scheduling_pb2 as s
from parcours.type.v1 import practice_pb2

from services.expertise.models import CaseResult
from services.scheduling.models import TeleconsultationOutcome
from tests.chaos.stack import ChaosStack, case_result, until
from tests.chaos.test_workers import DERM_LOIRE, GP, completion_record
from tests.scheduling.helpers import add_rules, every_day, new_schedule, stamp
from tests.support import LOIRE, bearer, request_id

FAMILY_NAME, GIVEN_NAMES, BORN = "QUERVELLOUX", "ISOLDINE MARIVONNE", date(1953, 7, 29)
# A phrase of the case's own, written in each free-text field.
FREE_TEXT = "plaque violine ombiliquée du mollet gauche"


def needles(nir: str) -> dict[str, list[bytes]]:
    """Each datum and the forms it could take once written out."""
    forms = {
        "family name": [FAMILY_NAME, FAMILY_NAME.title()],
        "given names": [*GIVEN_NAMES.split(), *(n.title() for n in GIVEN_NAMES.split())],
        "NIR": [nir, nir[:13], " ".join([nir[0], nir[1:3], nir[3:5], nir[5:7], nir[7:10], nir[10:13]])],
        "birth date": [BORN.isoformat(), BORN.strftime("%d/%m/%Y"), BORN.strftime("%Y%m%d")],
        "free text": [FREE_TEXT, FREE_TEXT.split(" du ")[0]],
    }
    return {what: [f.encode() for f in found] for what, found in forms.items()}


async def test_no_patient_data_in_temporal_logs_or_traces(
    chaos: ChaosStack, figures: Callable[[str], None]
) -> None:
    patient, nir = await chaos.new_patient(by=GP, family_name=FAMILY_NAME, given_names=GIVEN_NAMES, born=BORN)
    exports_before = len(chaos.receiver.bodies)

    # A whole téléexpertise, the case's free text in every field.
    expertise = chaos.expertise()
    gp, derm = chaos.practitioner(GP), chaos.practitioner(DERM_LOIRE)
    created = (
        await expertise.CreateTeleexpertiseRequest(
            e.CreateTeleexpertiseRequestRequest(
                request_id=request_id(),
                teleexpertise_request=e.TeleexpertiseRequestInput(
                    patient=patient,
                    patient_consent=True,
                    specialty=practice_pb2.SPECIALTY_DERMATOLOGY,
                    question=f"Conduite à tenir devant une {FREE_TEXT} ?",
                    clinical_context=f"Apparition il y a 3 mois d'une {FREE_TEXT}.",
                    urgency=e.URGENCY_ROUTINE,
                ),
            ),
            metadata=gp,
        )
    ).teleexpertise_request
    name = created.name
    await expertise.AcceptTeleexpertiseRequest(
        e.AcceptTeleexpertiseRequestRequest(request_id=request_id(), name=name), metadata=derm
    )
    await expertise.AskTeleexpertiseQuestion(
        e.AskTeleexpertiseQuestionRequest(
            request_id=request_id(), name=name, text=f"Douleur de la {FREE_TEXT} ?"
        ),
        metadata=derm,
    )
    await expertise.AnswerTeleexpertiseQuestion(
        e.AnswerTeleexpertiseQuestionRequest(request_id=request_id(), name=name, text=f"Oui, {FREE_TEXT}."),
        metadata=gp,
    )
    await expertise.SubmitTeleexpertiseReport(
        e.SubmitTeleexpertiseReportRequest(
            request_id=request_id(), name=name, report=e.ReportInput(summary=f"Biopsie de la {FREE_TEXT}.")
        ),
        metadata=derm,
    )
    handle = chaos.client.get_workflow_handle(
        f"teleexpertise-{name.removeprefix('teleexpertiseRequests/')}", result_type=CaseResult
    )
    assert (await case_result(handle, 120)).billing_state == "BILLED"

    # A whole teleconsultation.
    scheduling = chaos.scheduling()
    operator, desk = chaos.operator(), bearer(chaos.mint(staff="front-desk-chaos"))
    rpps = await chaos.new_practitioner()
    schedule = await new_schedule(scheduling, operator, rpps, LOIRE, horizon_days=3)
    await add_rules(scheduling, operator, schedule.name, every_day())
    [slot] = (
        await scheduling.SearchSlots(
            s.SearchSlotsRequest(
                practitioner=f"practitioners/{rpps}",
                start_time=stamp(datetime.now(UTC) + timedelta(hours=2)),
                page_size=1,
            ),
            metadata=desk,
        )
    ).slots
    booked = (
        await scheduling.BookAppointment(
            s.BookAppointmentRequest(
                request_id=request_id(),
                slot=slot.name,
                patient=patient,
                requester=f"practitioners/{GP}",
                treating_physician=f"practitioners/{GP}",
                consent=s.ConsentInput(method=s.CONSENT_METHOD_ELECTRONIC),
            ),
            metadata=desk,
        )
    ).appointment
    doctor = chaos.practitioner(rpps)
    await scheduling.StartTeleconsultation(
        s.StartTeleconsultationRequest(request_id=request_id(), name=booked.name), metadata=doctor
    )
    record = completion_record(rpps)
    record.report = f"Examen de la {FREE_TEXT}; avis dermatologique demandé."
    await scheduling.CompleteTeleconsultation(
        s.CompleteTeleconsultationRequest(request_id=request_id(), name=booked.name, record=record),
        metadata=doctor,
    )
    handle = chaos.client.get_workflow_handle(booked.workflow_id, result_type=TeleconsultationOutcome)
    assert (await case_result(handle, 120)).state == "BILLED"

    # The workers' spans of these cases have been exported (they go out in batches).
    async def exported() -> bool:
        return len(chaos.receiver.bodies) > exports_before

    await until(exported, 30)

    temporal = b"".join(
        path.read_bytes() for path in sorted(chaos.temporal_db.parent.glob(chaos.temporal_db.name + "*"))
    )
    logs = b"".join(
        path.read_bytes()
        for path in sorted((chaos.root / "logs").glob("*.log"))
        if path.name != "postgres.log"
    )
    logs += "\n".join(chaos.log_tap.lines).encode()
    spans = "\n".join(chaos.span_tap.spans).encode() + b"".join(chaos.receiver.bodies)
    places = {"the Temporal database": temporal, "the logs": logs, "the spans": spans}
    hits = [
        f"{what} in {where}"
        for what, forms in needles(nir).items()
        for where, haystack in places.items()
        if any(form in haystack for form in forms)
    ]
    figures(
        f"patient data scan (names, NIR, birth date, a case's free text; one téléexpertise and one "
        f"teleconsultation): Temporal database {len(temporal) / 1e6:.1f} MB, "
        f"logs {len(logs.splitlines())} lines, "
        f"{len(chaos.span_tap.spans)} in-process spans + {len(chaos.receiver.bodies)} OTLP exports: "
        f"{len(hits)} hits" + (f" ({'; '.join(hits)})" if hits else "")
    )
    assert hits == []
    # The same search finds them where they belong: in PostgreSQL's write-ahead log, in clear.
    wal = b"".join(path.read_bytes() for path in sorted((chaos.postgres.data_dir / "pg_wal").glob("0*")))
    assert FAMILY_NAME.encode() in wal and nir.encode() in wal
