"""National identifiers in FHIR, in the one form the ANS specifies, for every export the hub writes.

- A health professional: IDNPS (identifiant national de professionnel de santé), system
  `urn:oid:1.2.250.1.71.4.2.1`, value "8" + RPPS: the ANS national id of a professional known by RPPS is "8"
  followed by the 11 digits (domain reference §4.2, ANS PSIdNat).
- A structure: IDNST (identifiant national de structure), system `urn:oid:1.2.250.1.71.4.2.2`, value "1" +
  FINESS: the first character of an IDNST says which register the rest comes from, "1" for FINESS ("3" SIRET,
  "4" the RPPS id of a practice); the ANS Annuaire Santé publishes FINESS 060016219 as IDNST 1060016219.
  The bare 9-character FINESS belongs with the FINESS system, not with this OID.

Both forms are those of the SAS and Annuaire Santé FHIR guides (domain reference §4.3). ChargeItem (billing)
and AuditEvent (audit) build their identifiers here, so the same OID never carries two forms.
"""

from __future__ import annotations

import re
from typing import Any

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
