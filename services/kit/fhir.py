"""FHIR R4 building blocks for the record documents every case writes (R.6316-4, §7 rule 8).

A document is a `Bundle` of type `document`: its first entry a `Composition` (one section per R.6316-4
item), then every resource the composition refers to, each under a `urn:uuid:` full URL derived from the
document's id, so building the same record twice gives the same document. The domains write their
compositions (services/scheduling/documents.py, services/expertise/documents.py); this module writes what
they share: the patient, practitioners, organisations, narratives and the bundle itself.

Identifiers (ANS naming systems): the INS under its OID (only a qualified identity carries its matricule,
RNIV), practitioners as IDNPS (`8` + RPPS, urn:oid:1.2.250.1.71.4.2.1), establishments as IDNST (`1` +
FINESS, urn:oid:1.2.250.1.71.4.2.2). Section codes are the hub's own code system naming the five R.6316-4
items (no national value set covers them).
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

from parcours.directory.v1 import directory_pb2

IDNPS = "urn:oid:1.2.250.1.71.4.2.1"
IDNST = "urn:oid:1.2.250.1.71.4.2.2"
# The hub's own identifiers of its resources (opaque names such as patients/{uuid}).
HUB_SYSTEM = "https://parcours.invalid/fhir/sid/resource-name"
SECTION_SYSTEM = "https://parcours.invalid/fhir/CodeSystem/r6316-4-item"
PARTICIPANT_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
DOCUMENT_NAMESPACE = uuid.UUID("d0c5e1a2-3b4c-4d5e-8f60-718293a4b5c6")
MEDIA_TYPE = "application/fhir+json"

# The five items R.6316-4 CSP asks in the record: code → title.
ITEMS = {
    "report": "1° Compte rendu de l'acte",
    "acts-prescriptions": "2° Actes et prescriptions",
    "participants": "3° Identité des professionnels participants",
    "date-time": "4° Date et heure de l'acte",
    "technical-incidents": "5° Incidents techniques survenus au cours de l'acte",
}
_GENDER = {directory_pb2.SEX_FEMALE: "female", directory_pb2.SEX_MALE: "male"}


def document_id(case: str) -> uuid.UUID:
    """The id of a case's record document: one per case."""
    return uuid.uuid5(DOCUMENT_NAMESPACE, case)


def instant(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def narrative(lines: Iterable[str]) -> dict[str, str]:
    """A generated XHTML narrative, one paragraph per line (escaped)."""
    body = "".join(f"<p>{html.escape(line)}</p>" for line in lines) or "<p>-</p>"
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>'}


class DocumentBuilder:
    """Collects the resources of one document and gives each a stable `urn:uuid:` full URL."""

    def __init__(self, case: str) -> None:
        self.case = case
        self.id = document_id(case)
        self._entries: list[dict[str, Any]] = []
        self._urls: dict[str, str] = {}

    def url(self, key: str) -> str:
        return self._urls.setdefault(key, f"urn:uuid:{uuid.uuid5(self.id, key)}")

    def add(self, key: str, resource: dict[str, Any]) -> dict[str, str]:
        """Add a resource (once per key); its reference."""
        full_url = self.url(key)
        if not any(entry["fullUrl"] == full_url for entry in self._entries):
            resource = {"id": full_url.removeprefix("urn:uuid:"), **resource}
            self._entries.append({"fullUrl": full_url, "resource": resource})
        return {"reference": full_url}

    def patient(self, patient: directory_pb2.Patient) -> dict[str, str]:
        ins = patient.ins
        identifiers = [{"system": HUB_SYSTEM, "value": patient.name}]
        if ins.matricule and patient.identity_status == directory_pb2.IDENTITY_STATUS_QUALIFIED:
            identifiers.insert(0, {"use": "official", "system": f"urn:oid:{ins.oid}", "value": ins.matricule})
        resource: dict[str, Any] = {
            "resourceType": "Patient",
            "identifier": identifiers,
            "name": [
                {
                    "use": "official",
                    "family": ins.birth_family_name,
                    "given": ins.birth_given_names.split() or [ins.birth_given_names],
                }
            ],
        }
        if ins.sex in _GENDER:
            resource["gender"] = _GENDER[ins.sex]
        if ins.birth_date.year:
            born = date(ins.birth_date.year, ins.birth_date.month, ins.birth_date.day)
            resource["birthDate"] = born.isoformat()
        return self.add(patient.name, resource)

    def practitioner(self, practitioner: directory_pb2.Practitioner | None, name: str) -> dict[str, str]:
        """A practitioner from the directory; one the directory no longer knows keeps their RPPS."""
        rpps = name.removeprefix("practitioners/")
        resource: dict[str, Any] = {
            "resourceType": "Practitioner",
            "identifier": [{"system": IDNPS, "value": f"8{rpps}"}],
        }
        if practitioner is not None and practitioner.family_name:
            resource["name"] = [{"family": practitioner.family_name, "given": [practitioner.given_name]}]
        return self.add(name, resource)

    def organization(self, establishment: directory_pb2.Establishment | None, name: str) -> dict[str, str]:
        finess = name.removeprefix("establishments/")
        resource: dict[str, Any] = {
            "resourceType": "Organization",
            "identifier": [{"system": IDNST, "value": f"1{finess}"}],
        }
        if establishment is not None and establishment.display_name:
            resource["name"] = establishment.display_name
        return self.add(name, resource)

    def bundle(self, composition: dict[str, Any], timestamp: datetime) -> dict[str, Any]:
        """The document: the composition first, then every resource added."""
        composition = {"id": str(uuid.uuid5(self.id, "composition")), **composition}
        return {
            "resourceType": "Bundle",
            "id": str(self.id),
            "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{self.id}"},
            "type": "document",
            "timestamp": instant(timestamp),
            "entry": [
                {"fullUrl": f"urn:uuid:{composition['id']}", "resource": composition},
                *self._entries,
            ],
        }


def section(code: str, lines: Sequence[str], entries: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    """One R.6316-4 item as a Composition section."""
    found: dict[str, Any] = {
        "title": ITEMS[code],
        "code": {"coding": [{"system": SECTION_SYSTEM, "code": code, "display": ITEMS[code]}]},
        "text": narrative(lines),
    }
    if entries:
        found["entry"] = list(entries)
    return found
