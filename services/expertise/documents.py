"""A completed téléexpertise's R.6316-4 record as a FHIR R4 document. Pure: the activity gives the facts.

Composition (LOINC 11488-4, consult note — the expert's written opinion) with one section per R.6316-4 item:
1° the compte rendu (the expert's summary), 2° acts and prescriptions, 3° the professionals who took part
(requester, expert, others), 4° date and time of the report, 5° technical incidents. Subject: the patient as
the directory knows them (the INS only when qualified); author: the expert; custodian: the expert's
establishment. Both the requester and the expert keep it in their records.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from parcours.directory.v1 import directory_pb2

from services.expertise.models import ReportRecord
from services.kit import fhir


def record_bundle(
    *,
    request: str,
    report: ReportRecord,
    requester: str,
    expert_establishment: str,
    time_zone: str,
    patient: directory_pb2.Patient,
    practitioners: Mapping[str, directory_pb2.Practitioner | None],
    place: directory_pb2.Establishment | None,
) -> dict[str, Any]:
    document = fhir.DocumentBuilder(request)
    subject = document.patient(patient)
    author = document.practitioner(practitioners.get(report.author), report.author)
    custodian = document.organization(place, expert_establishment)
    participants, lines = [], []
    for name in report.participants:
        found = practitioners.get(name)
        participants.append(document.practitioner(found, name))
        who = f"{found.given_name} {found.family_name}" if found is not None else "(hors annuaire)"
        part = (
            "expert (requis)"
            if name == report.author
            else "requérant"
            if name == requester
            else "participant"
        )
        lines.append(f"{who}, RPPS {name.removeprefix('practitioners/')} : {part}")
    act_time: datetime = report.act_time
    local = act_time.astimezone(ZoneInfo(time_zone)).strftime("%d/%m/%Y %H:%M")
    composition = {
        "resourceType": "Composition",
        "status": "final",
        "type": {
            "coding": [{"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}],
            "text": "Compte rendu de téléexpertise",
        },
        "subject": subject,
        "date": fhir.instant(act_time),
        "author": [author],
        "title": "Compte rendu de téléexpertise",
        "custodian": custodian,
        "identifier": {"system": fhir.HUB_SYSTEM, "value": request},
        "section": [
            fhir.section("report", report.summary.splitlines()),
            fhir.section(
                "acts-prescriptions", report.acts_and_prescriptions or ["Aucun acte ni prescription."]
            ),
            fhir.section("participants", lines, participants),
            fhir.section("date-time", [f"Compte rendu du {local} ({time_zone})"]),
            fhir.section(
                "technical-incidents", [report.technical_incidents or "Aucun incident technique déclaré."]
            ),
        ],
    }
    return document.bundle(composition, act_time)
