"""A fulfilled teleconsultation's R.6316-4 record as a FHIR R4 document. Pure: the activity gives the facts.

Composition (LOINC 11488-4, consult note) with one section per R.6316-4 item: 1° the compte rendu, 2° acts
(each a `Procedure`) and prescriptions, 3° the professionals who took part (each a `Practitioner`, with their
part in the `Encounter`), 4° date and time (the virtual `Encounter`'s period), 5° technical incidents (or
their explicit absence). Subject: the patient as the directory knows them (the INS only when qualified).
Author: the teleconsultant; custodian: the practice place.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from parcours.directory.v1 import directory_pb2
from parcours.scheduling.v1 import scheduling_pb2

from services.kit import fhir

_PARTS = {
    scheduling_pb2.RecordParticipant.ROLE_TELECONSULTANT: ("PPRF", "téléconsultant"),
    scheduling_pb2.RecordParticipant.ROLE_ASSISTANT: ("SPRF", "professionnel aux côtés du patient"),
    scheduling_pb2.RecordParticipant.ROLE_OTHER: ("PART", "autre participant"),
}
_PRESCRIPTIONS = {
    scheduling_pb2.Prescription.KIND_MEDICATION: "Médicaments",
    scheduling_pb2.Prescription.KIND_EXAMINATION: "Examens",
    scheduling_pb2.Prescription.KIND_SICK_LEAVE: "Arrêt de travail",
    scheduling_pb2.Prescription.KIND_OTHER: "Autre",
}


def _local(instant: datetime, zone: str) -> str:
    return instant.astimezone(ZoneInfo(zone)).strftime("%d/%m/%Y %H:%M")


def record_bundle(
    *,
    appointment: str,
    time_zone: str,
    record: scheduling_pb2.TeleconsultationRecord,
    teleconsultant: str,
    establishment: str,
    patient: directory_pb2.Patient,
    practitioners: Mapping[str, directory_pb2.Practitioner | None],
    place: directory_pb2.Establishment | None,
) -> dict[str, Any]:
    document = fhir.DocumentBuilder(appointment)
    start = record.act_start_time.ToDatetime(tzinfo=UTC)
    end = record.act_end_time.ToDatetime(tzinfo=UTC)
    period = {"start": fhir.instant(start), "end": fhir.instant(end)}
    subject = document.patient(patient)
    custodian = document.organization(place, establishment)
    author = document.practitioner(practitioners.get(teleconsultant), teleconsultant)

    participants, participant_lines, encounter_participants = [], [], []
    for taking_part in record.participants:
        code, part = _PARTS[taking_part.role]
        found = practitioners.get(taking_part.practitioner)
        reference = document.practitioner(found, taking_part.practitioner)
        participants.append(reference)
        who = f"{found.given_name} {found.family_name}" if found is not None else "(hors annuaire)"
        rpps = taking_part.practitioner.removeprefix("practitioners/")
        participant_lines.append(f"{who}, RPPS {rpps} : {part}")
        encounter_participants.append(
            {
                "type": [{"coding": [{"system": fhir.PARTICIPANT_SYSTEM, "code": code}]}],
                "individual": reference,
            }
        )
    encounter = document.add(
        "encounter",
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "VR",
                "display": "virtual",
            },
            "identifier": [{"system": fhir.HUB_SYSTEM, "value": appointment}],
            "subject": subject,
            "participant": encounter_participants,
            "period": period,
            "serviceProvider": custodian,
        },
    )
    procedures = [
        document.add(
            f"act-{index}",
            {
                "resourceType": "Procedure",
                "status": "completed",
                "code": {"text": f"{act.code} {act.description}".strip()},
                "subject": subject,
                "encounter": encounter,
                "performedPeriod": period,
                "performer": [{"actor": author}],
            },
        )
        for index, act in enumerate(record.acts)
    ]
    act_lines = [f"Acte : {act.code + ' ' if act.code else ''}{act.description}" for act in record.acts]
    prescription_lines = []
    for prescription in record.prescriptions:
        line = f"Prescription ({_PRESCRIPTIONS[prescription.kind]}) : {prescription.description}"
        if prescription.kind == scheduling_pb2.Prescription.KIND_SICK_LEAVE:
            line += f" ({prescription.sick_leave_days} jours)"
        prescription_lines.append(line)
    incidents = [
        (f"{_local(i.occur_time.ToDatetime(tzinfo=UTC), time_zone)} : " if i.HasField("occur_time") else "")
        + i.description
        for i in record.technical_incidents
    ] or ["Aucun incident technique (déclaré par le téléconsultant)."]
    composition = {
        "resourceType": "Composition",
        "status": "final",
        "type": {
            "coding": [{"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}],
            "text": "Compte rendu de téléconsultation",
        },
        "subject": subject,
        "encounter": encounter,
        "date": fhir.instant(end),
        "author": [author],
        "title": "Compte rendu de téléconsultation",
        "custodian": custodian,
        "section": [
            fhir.section("report", record.report.splitlines()),
            fhir.section("acts-prescriptions", act_lines + prescription_lines, procedures),
            fhir.section("participants", participant_lines, participants),
            fhir.section(
                "date-time", [f"Du {_local(start, time_zone)} au {_local(end, time_zone)} ({time_zone})"]
            ),
            fhir.section("technical-incidents", incidents),
        ],
    }
    return document.bundle(composition, end)
