"""FHIR R4 for the hub: national identifiers in the one form the ANS specifies, and the building blocks of the
record documents every case writes (R.6316-4, §7 rule 8).

Identifiers (every export and document builds them here, so the same OID never carries two forms):
- a health professional: IDNPS (identifiant national de professionnel de santé), system
  `urn:oid:1.2.250.1.71.4.2.1`, value "8" + RPPS: the ANS national id of a professional known by RPPS is "8"
  followed by the 11 digits (domain reference §4.2, ANS PSIdNat);
- a structure: IDNST (identifiant national de structure), system `urn:oid:1.2.250.1.71.4.2.2`, value "1" +
  FINESS: the first character of an IDNST says which register the rest comes from, "1" for FINESS ("3" SIRET,
  "4" the RPPS id of a practice); the ANS Annuaire Santé publishes FINESS 060016219 as IDNST 1060016219. The
  bare 9-character FINESS belongs with the FINESS system, not with this OID;
- a patient: the INS under its OID (only a qualified identity carries its matricule, RNIV).
Both national forms are those of the SAS and Annuaire Santé FHIR guides (domain reference §4.3).

Documents: a `Bundle` of type `document`, its first entry a `Composition` (one section per R.6316-4 item),
then every resource the composition refers to, each under a `urn:uuid:` full URL derived from the document's
id, so building the same record twice gives the same document. The domains write their compositions
(services/scheduling/documents.py, services/expertise/documents.py); this module writes what they share: the
patient, practitioners, organisations, narratives and the bundle itself. Section codes are the hub's own code
system naming the five R.6316-4 items (no national value set covers them).
"""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

from parcours.directory.v1 import directory_pb2

IDNPS = "urn:oid:1.2.250.1.71.4.2.1"
IDNST = "urn:oid:1.2.250.1.71.4.2.2"
# IDNST type prefix of a structure identified by its FINESS.
IDNST_FINESS_PREFIX = "1"
# IDNPS type prefix of a professional identified by their RPPS.
IDNPS_RPPS_PREFIX = "8"

_RPPS_RE = re.compile(r"^[0-9]{11}$")
_FINESS_RE = re.compile(r"^(?:[0-9]{2}|2[AB])[0-9]{7}$")


def practitioner_identifier(rpps: str) -> dict[str, Any]:
    """The FHIR Identifier of a health professional known by RPPS (`practitioners/{rpps}` also accepted)."""
    rpps = rpps.removeprefix("practitioners/")
    if not _RPPS_RE.fullmatch(rpps):
        raise ValueError("an RPPS is 11 digits")
    return {"system": IDNPS, "value": IDNPS_RPPS_PREFIX + rpps}


def establishment_identifier(finess: str) -> dict[str, Any]:
    """The FHIR Identifier of an establishment known by FINESS (`establishments/{finess}` also accepted)."""
    finess = finess.removeprefix("establishments/")
    if not _FINESS_RE.fullmatch(finess):
        raise ValueError("a FINESS is 9 characters")
    return {"system": IDNST, "value": IDNST_FINESS_PREFIX + finess}


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
            "identifier": [practitioner_identifier(rpps)],
        }
        if practitioner is not None and practitioner.family_name:
            resource["name"] = [{"family": practitioner.family_name, "given": [practitioner.given_name]}]
        return self.add(name, resource)

    def organization(self, establishment: directory_pb2.Establishment | None, name: str) -> dict[str, str]:
        finess = name.removeprefix("establishments/")
        resource: dict[str, Any] = {
            "resourceType": "Organization",
            "identifier": [establishment_identifier(finess)],
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
