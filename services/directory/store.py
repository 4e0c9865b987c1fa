"""The directory's SQL: reads and writes of schema `directory`, returning the API's protobuf resources.

Keys in, resources out: methods take ids (region code `84`, GHT id, FINESS, RPPS, patient UUID) and proto enum
values, and return `parcours.directory.v1` messages with their resource names built (`ghts/ght-loire`, ...).
A missing resource is `None` (the servicer raises NotFound); a refused write raises a `services.kit.errors`
domain error with a stable reason, chosen from the name of the database constraint that refused it.

Lists use keyset pagination: a list reads `page_size + 1` rows ordered by the resource's key after `after_*`
and returns `(items, next_key)`, `next_key` being the last item's key when another page exists, else `None`;
the servicer turns keys into opaque page tokens and clamps page sizes (default 50, max 500).

Transactions. Every method takes an optional keyword `tx`, a connection inside a transaction opened by
`async with store.transaction() as tx:`. Without `tx` a write runs in its own transaction; with `tx` it runs
in a savepoint of the caller's transaction, so a refused write (AlreadyExists, FailedPrecondition...) undoes
only itself and the caller's transaction stays usable. Every multi-row write (a practitioner and its practice
places, an offer and its members, a patient and its local identifier) is atomic either way.

Idempotency of mutating RPCs (every request carries a client `request_id`): the kit's ledger in this schema
(`LEDGER`, services/kit/idempotency.py), claimed and written in the write's own transaction by the servicer,
with the response kept so a retry by the same caller gets the same answer (purged after the retention).
"""

# ruff: noqa: S608  (queries are composed of module constants only; values always travel as $n parameters)
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypedDict

import asyncpg  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.timestamp_pb2 import Timestamp
from parcours.directory.v1 import directory_pb2
from parcours.type.v1 import practice_pb2

from services.directory.identifiers import NIR_TRAIT_CONSTRAINTS, national_id
from services.kit.db import constraint_errors
from services.kit.errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
)
from services.kit.idempotency import Ledger
from services.kit.pagination import split_page

# The service's idempotency ledger (the kit's shape, in this schema).
LEDGER = Ledger("directory")

Profession = practice_pb2.Profession
Specialty = practice_pb2.Specialty
ConventionSector = practice_pb2.ConventionSector
Kind = directory_pb2.Establishment.Kind
Sex = directory_pb2.Sex
IdentityStatus = directory_pb2.IdentityStatus

# Only these may be the requis of a téléexpertise (L.6316-1 / R.6316-1 CSP: professionnels médicaux).
MEDICAL_PROFESSIONS = frozenset({"PROFESSION_PHYSICIAN", "PROFESSION_MIDWIFE", "PROFESSION_DENTIST"})
# First key of the directory's two-key advisory locks (ASCII "dir"), so its locks never collide with another
# component's single-key locks or with two-key locks of another class.

# --- Queries ------------------------------------------------------------------------------------------------
# Optional filters are `($n::type IS NULL OR ...)`, so that one static statement serves every combination.
# Practitioners, expertise offers and patients are read from the migration's `*_resources` views, which add
# their child rows as arrays in a stable order.

GET_REGION = "SELECT code, display_name, time_zone, overseas FROM directory.regions WHERE code = $1"
LIST_REGIONS = """
SELECT code, display_name, time_zone, overseas FROM directory.regions
WHERE ($1::text IS NULL OR code > $1)
ORDER BY code LIMIT $2
"""
GET_REGION_OVERSEAS = "SELECT overseas FROM directory.regions WHERE code = $1"

GET_GHT = """
SELECT ght_id, display_name, region_code, support_finess, create_time FROM directory.ghts WHERE ght_id = $1
"""
GET_GHT_REGION = "SELECT region_code FROM directory.ghts WHERE ght_id = $1"
LIST_GHTS = """
SELECT ght_id, display_name, region_code, support_finess, create_time FROM directory.ghts
WHERE ($1::text IS NULL OR ght_id > $1) AND ($2::text IS NULL OR region_code = $2)
ORDER BY ght_id LIMIT $3
"""
INSERT_GHT = """
INSERT INTO directory.ghts (ght_id, display_name, region_code, support_finess) VALUES ($1, $2, $3, $4)
RETURNING ght_id, display_name, region_code, support_finess, create_time
"""
# Loading GHTs before their support establishments (the demo seed) defers that one check to commit.
DEFER_GHT_SUPPORT_CHECK = "SET CONSTRAINTS directory.ghts_support_fkey DEFERRED"

GET_ESTABLISHMENT = """
SELECT finess, display_name, kind, ght_id, region_code, time_zone, overseas, create_time, update_time
FROM directory.establishments WHERE finess = $1
"""
LIST_ESTABLISHMENTS = """
SELECT finess, display_name, kind, ght_id, region_code, time_zone, overseas, create_time, update_time
FROM directory.establishments
WHERE ($1::text IS NULL OR finess > $1)
  AND ($2::text IS NULL OR ght_id = $2)
  AND ($3::text IS NULL OR region_code = $3)
ORDER BY finess LIMIT $4
"""
INSERT_ESTABLISHMENT = """
INSERT INTO directory.establishments (finess, display_name, kind, ght_id, region_code, time_zone, overseas)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING finess, display_name, kind, ght_id, region_code, time_zone, overseas, create_time, update_time
"""
# A field is replaced only when its flag is set: one statement for every update mask.
UPDATE_ESTABLISHMENT = """
UPDATE directory.establishments SET
    display_name = CASE WHEN $2::boolean THEN $3::text ELSE display_name END,
    ght_id = CASE WHEN $4::boolean THEN $5::text ELSE ght_id END,
    time_zone = CASE WHEN $6::boolean THEN $7::text ELSE time_zone END
WHERE finess = $1
RETURNING finess, display_name, kind, ght_id, region_code, time_zone, overseas, create_time, update_time
"""

GET_PRACTITIONER = "SELECT * FROM directory.practitioner_resources WHERE rpps = $1"
LIST_PRACTITIONERS = """
SELECT * FROM directory.practitioner_resources p
WHERE ($1::text IS NULL OR p.rpps > $1)
  AND ($2::text IS NULL OR p.profession = $2)
  AND ($3::text IS NULL OR p.specialty = $3)
  AND ($4::text IS NULL OR EXISTS (
      SELECT 1 FROM directory.practice_places pp WHERE pp.rpps = p.rpps AND pp.finess = $4))
  AND ($5::text IS NULL OR EXISTS (
      SELECT 1 FROM directory.practice_places pp JOIN directory.establishments e ON e.finess = pp.finess
      WHERE pp.rpps = p.rpps AND e.ght_id = $5))
  AND ($6::text IS NULL OR EXISTS (
      SELECT 1 FROM directory.practice_places pp JOIN directory.establishments e ON e.finess = pp.finess
      WHERE pp.rpps = p.rpps AND e.region_code = $6))
ORDER BY p.rpps LIMIT $7
"""
INSERT_PRACTITIONER = """
INSERT INTO directory.practitioners (rpps, family_name, given_name, profession, specialty, sector, active)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""
UPDATE_PRACTITIONER = """
UPDATE directory.practitioners SET
    family_name = CASE WHEN $2::boolean THEN $3::text ELSE family_name END,
    given_name = CASE WHEN $4::boolean THEN $5::text ELSE given_name END,
    specialty = CASE WHEN $6::boolean THEN $7::text ELSE specialty END,
    sector = CASE WHEN $8::boolean THEN $9::text ELSE sector END,
    active = CASE WHEN $10::boolean THEN $11::boolean ELSE active END
WHERE rpps = $1
RETURNING rpps
"""
INSERT_PRACTICE_PLACES = """
INSERT INTO directory.practice_places (rpps, finess) SELECT $1, unnest($2::text[])
ON CONFLICT DO NOTHING
"""
DELETE_OTHER_PRACTICE_PLACES = """
DELETE FROM directory.practice_places WHERE rpps = $1 AND NOT (finess = ANY($2::text[]))
"""
GET_PROFESSIONS = "SELECT rpps, profession FROM directory.practitioners WHERE rpps = ANY($1::text[])"

GET_EXPERTISE_OFFER = "SELECT * FROM directory.expertise_offer_resources WHERE offer_id = $1"
LIST_EXPERTISE_OFFERS = """
SELECT * FROM directory.expertise_offer_resources o
WHERE ($1::text IS NULL OR o.offer_id > $1)
  AND ($2::text IS NULL OR o.specialty = $2)
  AND ($3::text IS NULL OR o.ght_id = $3)
  AND ($4::text IS NULL OR o.region_code = $4)
  AND ($5::text IS NULL OR EXISTS (
      SELECT 1 FROM directory.expertise_offer_members m WHERE m.offer_id = o.offer_id AND m.rpps = $5))
ORDER BY o.offer_id LIMIT $6
"""
INSERT_EXPERTISE_OFFER = """
INSERT INTO directory.expertise_offers
    (offer_id, display_name, specialty, ght_id, region_code, backup_rpps, backup_profession, accepting)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
INSERT_EXPERTISE_OFFER_MEMBERS = """
INSERT INTO directory.expertise_offer_members (offer_id, rpps, profession)
SELECT $1, m.rpps, m.profession FROM unnest($2::text[], $3::text[]) AS m (rpps, profession)
"""

# The hub's patient-visibility rule (services.kit.directory states it) and the view of a patient it gives, in
# one place. $1 is the caller's FINESS, NULL for an unrestricted caller (hub operator, component).
#
# A restricted caller sees a patient when a local identifier of the patient is at its establishment or at an
# establishment of its GHT, and sees it as its GHT knows it: the national INS identity, the identity status
# its domain recorded (else the hub's), only the local identifiers of its own GHT, created when its GHT first
# knew the patient and updated at the last change it can see. Nothing in a row tells what another GHT knows.
# An unrestricted caller sees every record as the hub holds it.
# The queries below are composed of these constants only (no value is ever formatted into SQL: S608 is off
# for this module at its top).
_DOMAIN = "coalesce('ghts/' || {e}.ght_id, 'establishments/' || {e}.finess)"
_PATIENT_VIEWS = f"""
WITH caller AS (
    SELECT e.finess, e.ght_id, {_DOMAIN.format(e="e")} AS domain
    FROM directory.establishments e WHERE e.finess = $1
)
SELECT
    pa.patient_id, pa.matricule, pa.oid, pa.birth_family_name, pa.birth_given_names, pa.birth_date, pa.sex,
    pa.birth_place_code, pa.conflicts_with,
    coalesce(s.identity_status, pa.identity_status) AS identity_status,
    CASE WHEN $1::text IS NULL THEN pa.create_time ELSE k.first_link END AS create_time,
    greatest(k.last_link, coalesce(s.update_time, pa.update_time)) AS update_time,
    k.local_finess, k.local_ipps
FROM directory.patients pa
LEFT JOIN caller c ON true
LEFT JOIN directory.patient_domain_statuses s ON s.patient_id = pa.patient_id AND s.domain = c.domain
CROSS JOIN LATERAL (
    SELECT
        min(l.create_time) AS first_link,
        max(l.create_time) AS last_link,
        coalesce(array_agg(l.finess ORDER BY l.finess), '{{}}') AS local_finess,
        coalesce(array_agg(l.ipp ORDER BY l.finess), '{{}}') AS local_ipps
    FROM directory.patient_local_ids l JOIN directory.establishments e ON e.finess = l.finess
    WHERE l.patient_id = pa.patient_id AND ($1::text IS NULL OR l.finess = c.finess OR e.ght_id = c.ght_id)
) k
WHERE ($1::text IS NULL OR k.first_link IS NOT NULL)
"""
GET_PATIENT = _PATIENT_VIEWS + "  AND pa.patient_id = $2"
LIST_PATIENTS = (
    _PATIENT_VIEWS
    + """  AND ($2::uuid IS NULL OR pa.patient_id > $2)
  AND ($3::text IS NULL OR EXISTS (
      SELECT 1 FROM directory.patient_local_ids l WHERE l.patient_id = pa.patient_id AND l.finess = $3))
ORDER BY pa.patient_id LIMIT $4
"""
)
RESOLVE_BY_LOCAL_IDENTIFIER = (
    _PATIENT_VIEWS
    + """  AND pa.patient_id = (
      SELECT l.patient_id FROM directory.patient_local_ids l WHERE l.finess = $2 AND l.ipp = $3)
"""
)
# An unrestricted caller resolves to the INS's first record (conflict records are the operators' to review).
RESOLVE_BY_MATRICULE = (
    _PATIENT_VIEWS
    + """  AND pa.matricule = $2 AND ($3::text IS NULL OR pa.oid = $3)
  AND ($1::text IS NOT NULL OR pa.conflicts_with IS NULL)
ORDER BY pa.patient_id LIMIT 2
"""
)
# The records of an INS the caller sees, its first record first.
VISIBLE_INS_RECORDS = (
    _PATIENT_VIEWS
    + """  AND pa.oid = $2 AND pa.matricule = $3
ORDER BY pa.conflicts_with IS NOT NULL, pa.create_time
"""
)
# Whether establishment $2 is within the reach of a caller at $1 (the same establishment, or its GHT).
IN_SCOPE = """
SELECT EXISTS (
    SELECT 1 FROM directory.establishments c JOIN directory.establishments e ON e.finess = $2
    WHERE c.finess = $1 AND (e.finess = c.finess OR e.ght_id = c.ght_id)
)
"""
PATIENT_EXISTS = "SELECT EXISTS (SELECT 1 FROM directory.patients WHERE patient_id = $1)"
INSERT_PATIENT = """
INSERT INTO directory.patients (patient_id, matricule, oid, birth_family_name, birth_given_names, birth_date,
    sex, birth_place_code, identity_status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (oid, matricule) WHERE conflicts_with IS NULL DO NOTHING
RETURNING patient_id
"""
INSERT_CONFLICTING_PATIENT = """
INSERT INTO directory.patients (patient_id, matricule, oid, birth_family_name, birth_given_names, birth_date,
    sex, birth_place_code, identity_status, conflicts_with)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""
# Every record of an INS, its first record first.
GET_INS_RECORDS = """
SELECT patient_id, birth_family_name, birth_given_names, birth_date, sex, birth_place_code
FROM directory.patients WHERE oid = $1 AND matricule = $2
ORDER BY conflicts_with IS NOT NULL, create_time
"""
GET_PATIENT_INS = """
SELECT patient_id, oid, matricule, birth_family_name, birth_given_names, birth_date, sex, birth_place_code
FROM directory.patients WHERE patient_id = $1
"""
UPDATE_PATIENT_STATUS = """
UPDATE directory.patients SET identity_status = $2 WHERE patient_id = $1 RETURNING patient_id
"""
# The status a caller's identity domain records ($2: the caller's FINESS).
SET_DOMAIN_STATUS = f"""
INSERT INTO directory.patient_domain_statuses (patient_id, domain, identity_status)
SELECT $1, {_DOMAIN.format(e="e")}, $3 FROM directory.establishments e WHERE e.finess = $2
ON CONFLICT (patient_id, domain) DO UPDATE SET identity_status = excluded.identity_status, update_time = now()
"""
TRANSACTION_TIME = "SELECT now()"
INSERT_LOCAL_IDENTIFIER = """
INSERT INTO directory.patient_local_ids (finess, ipp, patient_id) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING
RETURNING patient_id
"""
GET_LOCAL_IDENTIFIER_CONFLICTS = """
SELECT ipp, patient_id FROM directory.patient_local_ids WHERE finess = $1 AND (ipp = $2 OR patient_id = $3)
"""


CLAIM_SEED = "INSERT INTO directory.seeds (seed) VALUES ($1) ON CONFLICT DO NOTHING RETURNING seed"


# --- Errors by constraint ----------------------------------------------------------------------------------


def _exists(reason: str, message: str) -> Callable[[], DomainError]:
    return lambda: AlreadyExists(reason, message)


def _precondition(reason: str, message: str) -> Callable[[], DomainError]:
    return lambda: FailedPrecondition(reason, message)


def _invalid(field: str, description: str) -> Callable[[], DomainError]:
    return lambda: InvalidArgument([FieldViolation(field, description)])


_NOT_MEDICAL = "an expert must be a physician, a midwife or a dentist"

# What each named constraint's violation means to a client. Field paths are those of the Create/Update
# requests; the servicer validates requests first, so check violations here are a backstop. Messages never
# carry values: a violated key may be patient data.
_CONSTRAINT_ERRORS: dict[str, Callable[[], DomainError]] = {
    "ghts_pkey": _exists("GHT_EXISTS", "a GHT with this id already exists"),
    "establishments_pkey": _exists(
        "ESTABLISHMENT_EXISTS", "an establishment with this FINESS already exists"
    ),
    "practitioners_pkey": _exists("PRACTITIONER_EXISTS", "a practitioner with this RPPS already exists"),
    "expertise_offers_pkey": _exists(
        "EXPERTISE_OFFER_EXISTS", "an expertise offer with this id already exists"
    ),
    "patients_pkey": _exists("PATIENT_EXISTS", "a patient with this id already exists"),
    "patient_local_ids_pkey": _exists(
        "LOCAL_IDENTIFIER_IN_USE", "this IPP already names another patient at this establishment"
    ),
    "patient_local_ids_patient_key": _exists(
        "PATIENT_HAS_LOCAL_IDENTIFIER", "the establishment already knows this patient under another IPP"
    ),
    "idempotency_pkey": lambda: Aborted(
        "CONCURRENT_REQUEST", "the same request is being processed; retry it"
    ),
    "ghts_region_fkey": _precondition("UNKNOWN_REGION", "no such region"),
    "ghts_support_fkey": _precondition("UNKNOWN_ESTABLISHMENT", "no such support establishment"),
    "establishments_region_fkey": _precondition("UNKNOWN_REGION", "no such region"),
    "establishments_ght_fkey": _precondition("UNKNOWN_GHT", "no such GHT in the establishment's region"),
    "practice_places_finess_fkey": _precondition("UNKNOWN_ESTABLISHMENT", "no such practice place"),
    "practice_places_rpps_fkey": _precondition("UNKNOWN_PRACTITIONER", "no such practitioner"),
    "expertise_offers_ght_fkey": _precondition("UNKNOWN_GHT", "no such GHT"),
    "expertise_offers_region_fkey": _precondition("UNKNOWN_REGION", "no such region"),
    "expertise_offers_backup_fkey": _precondition("UNKNOWN_PRACTITIONER", "no such backup expert"),
    "expertise_offer_members_practitioner_fkey": _precondition("UNKNOWN_PRACTITIONER", "no such member"),
    "expertise_offers_backup_medical": _precondition("EXPERT_NOT_MEDICAL", _NOT_MEDICAL),
    "expertise_offer_members_medical": _precondition("EXPERT_NOT_MEDICAL", _NOT_MEDICAL),
    "patient_local_ids_finess_fkey": _precondition("UNKNOWN_ESTABLISHMENT", "no such establishment"),
    "patient_local_ids_patient_fkey": _precondition("UNKNOWN_PATIENT", "no such patient"),
    "ghts_ght_id_format": _invalid("ght_id", "lower-case letters, digits and dashes, 2 to 63 characters"),
    "ghts_display_name_present": _invalid("ght.display_name", "1 to 200 characters"),
    "establishments_finess_format": _invalid(
        "establishment.finess", "département (2 digits, 2A or 2B) + 7 digits"
    ),
    "establishments_display_name_present": _invalid("establishment.display_name", "1 to 200 characters"),
    "establishments_kind_known": _invalid("establishment.kind", "legal entity or site"),
    "establishments_time_zone_known": _invalid("establishment.time_zone", "not a French time zone"),
    "practitioners_rpps_format": _invalid("practitioner.rpps", "11 digits"),
    "practitioners_family_name_present": _invalid("practitioner.family_name", "1 to 100 characters"),
    "practitioners_given_name_present": _invalid("practitioner.given_name", "1 to 100 characters"),
    "practitioners_profession_known": _invalid("practitioner.profession", "a profession is required"),
    "practitioners_specialty_known": _invalid("practitioner.specialty", "a specialty is required"),
    "practitioners_sector_known": _invalid("practitioner.sector", "a conventional sector is required"),
    "practitioners_specialty_profession": _invalid(
        "practitioner.specialty",
        "physicians have a specialty; professions other than physician and dentist have SPECIALTY_NONE",
    ),
    "expertise_offers_offer_id_format": _invalid("offer_id", "lower-case letters, digits and dashes"),
    "expertise_offers_display_name_present": _invalid("display_name", "1 to 200 characters"),
    "expertise_offers_specialty_known": _invalid("specialty", "a medical specialty is required"),
    "expertise_offers_one_scope": _invalid("scope", "exactly one of ght or region"),
    "patients_matricule_valid": _invalid("ins.matricule", "not a NIR or NIA with a matching key"),
    "patients_oid_known": _invalid("ins.oid", "not an INS OID"),
    "patients_birth_family_name_present": _invalid("ins.birth_family_name", "1 to 100 characters"),
    "patients_birth_given_names_present": _invalid("ins.birth_given_names", "1 to 200 characters"),
    "patients_sex_known": _invalid("ins.sex", "female or male"),
    "patients_birth_place_format": _invalid("ins.birth_place_code", "an INSEE code of 5 characters"),
    "patients_identity_status_known": _invalid("identity_status", "an identity status is required"),
    "patient_local_ids_ipp_format": _invalid("ipp", "1 to 32 letters, digits or dashes"),
    # NIR ↔ traits of a non-provisional identity (§7.5): NIR_TRAITS_MISMATCH naming the trait.
    **NIR_TRAIT_CONSTRAINTS,
}


# --- Results and inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatientCreation:
    """What create_patient did."""

    # The patient as the caller may see it.
    patient: directory_pb2.Patient
    # False when an existing record of the INS is returned.
    created: bool
    # False when the caller sees the INS with other strict traits: an identity-vigilance alert for the caller
    # to raise, never a silent overwrite of a possibly qualified identity.
    traits_match: bool = True
    # True when a conflict record was written (an INS known elsewhere with other strict traits).
    conflict: bool = False


class EstablishmentChanges(TypedDict, total=False):
    """Fields of UpdateEstablishment's mask; `ght` is a GHT id, or None to leave any GHT."""

    display_name: str
    ght: str | None
    time_zone: str


class PractitionerChanges(TypedDict, total=False):
    """Fields of UpdatePractitioner's mask; `practice_places` (FINESS) replaces the practice places."""

    family_name: str
    given_name: str
    specialty: practice_pb2.Specialty.ValueType
    sector: practice_pb2.ConventionSector.ValueType
    practice_places: Sequence[str]
    active: bool


# --- Rows to resources -------------------------------------------------------------------------------------


def _timestamp(instant: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(instant)
    return ts


def _region(row: asyncpg.Record) -> directory_pb2.Region:
    return directory_pb2.Region(
        name=f"regions/{row['code']}",
        code=row["code"],
        display_name=row["display_name"],
        time_zone=row["time_zone"],
        overseas=row["overseas"],
    )


def _ght(row: asyncpg.Record) -> directory_pb2.Ght:
    support = row["support_finess"]
    return directory_pb2.Ght(
        name=f"ghts/{row['ght_id']}",
        ght_id=row["ght_id"],
        display_name=row["display_name"],
        region=f"regions/{row['region_code']}",
        support_establishment=f"establishments/{support}" if support else "",
        create_time=_timestamp(row["create_time"]),
    )


def _establishment(row: asyncpg.Record) -> directory_pb2.Establishment:
    ght = row["ght_id"]
    return directory_pb2.Establishment(
        name=f"establishments/{row['finess']}",
        finess=row["finess"],
        display_name=row["display_name"],
        kind=Kind.Value(row["kind"]),
        ght=f"ghts/{ght}" if ght else "",
        region=f"regions/{row['region_code']}",
        time_zone=row["time_zone"],
        overseas=row["overseas"],
        create_time=_timestamp(row["create_time"]),
        update_time=_timestamp(row["update_time"]),
    )


def _practitioner(row: asyncpg.Record) -> directory_pb2.Practitioner:
    return directory_pb2.Practitioner(
        name=f"practitioners/{row['rpps']}",
        rpps=row["rpps"],
        national_id=national_id(row["rpps"]),
        family_name=row["family_name"],
        given_name=row["given_name"],
        profession=Profession.Value(row["profession"]),
        specialty=Specialty.Value(row["specialty"]),
        sector=ConventionSector.Value(row["sector"]),
        practice_places=[
            directory_pb2.PracticePlace(establishment=f"establishments/{finess}", time_zone=time_zone)
            for finess, time_zone in zip(row["place_finess"], row["place_time_zones"], strict=True)
        ],
        active=row["active"],
        create_time=_timestamp(row["create_time"]),
        update_time=_timestamp(row["update_time"]),
    )


def _expertise_offer(row: asyncpg.Record) -> directory_pb2.ExpertiseOffer:
    offer = directory_pb2.ExpertiseOffer(
        name=f"expertiseOffers/{row['offer_id']}",
        offer_id=row["offer_id"],
        display_name=row["display_name"],
        specialty=Specialty.Value(row["specialty"]),
        members=[f"practitioners/{rpps}" for rpps in row["members"]],
        backup_expert=f"practitioners/{row['backup_rpps']}" if row["backup_rpps"] else "",
        accepting=row["accepting"],
        create_time=_timestamp(row["create_time"]),
    )
    if row["ght_id"] is not None:
        offer.ght = f"ghts/{row['ght_id']}"
    else:
        offer.region = f"regions/{row['region_code']}"
    return offer


def _traits(row: Any) -> tuple[object, ...]:
    return (
        row["birth_family_name"],
        row["birth_given_names"],
        row["birth_date"],
        row["sex"],
        row["birth_place_code"],
    )


def _patient(row: Any, scoped: bool) -> directory_pb2.Patient:
    """A row of _PATIENT_VIEWS as a resource; a `scoped` caller never learns of conflict records."""
    birth: date = row["birth_date"]
    qualified = row["identity_status"] == "IDENTITY_STATUS_QUALIFIED"
    patient = directory_pb2.Patient(
        name=f"patients/{row['patient_id']}",
        ins=directory_pb2.InsIdentity(
            # RNIV: only a qualified INS may be shared with its matricule; the OID and the traits always are.
            matricule=row["matricule"] if qualified else "",
            oid=row["oid"],
            birth_family_name=row["birth_family_name"],
            birth_given_names=row["birth_given_names"],
            sex=Sex.Value(row["sex"]),
            birth_place_code=row["birth_place_code"],
        ),
        identity_status=IdentityStatus.Value(row["identity_status"]),
        local_identifiers=[
            directory_pb2.LocalIdentifier(establishment=f"establishments/{finess}", ipp=ipp)
            for finess, ipp in zip(row["local_finess"], row["local_ipps"], strict=True)
        ],
        create_time=_timestamp(row["create_time"]),
        update_time=_timestamp(row["update_time"]),
    )
    if not scoped and row["conflicts_with"] is not None:
        patient.identity_conflict = f"patients/{row['conflicts_with']}"
    # Set field by field rather than built as a google.type.Date: that module ships no type information.
    patient.ins.birth_date.year = birth.year
    patient.ins.birth_date.month = birth.month
    patient.ins.birth_date.day = birth.day
    return patient


def _split_page(rows: Sequence[asyncpg.Record], page_size: int, key: str) -> tuple[Sequence[Any], Any]:
    """The page's rows and the key to continue after, from `page_size + 1` rows read."""
    page, last = split_page(rows, page_size)
    return page, None if last is None else last[key]


def _limit(page_size: int) -> int:
    if page_size < 1:
        raise ValueError("page_size must be at least 1 (the servicer applies the default)")
    return page_size + 1


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


# --- The store ---------------------------------------------------------------------------------------------


class DirectoryStore:
    """Reads and writes of schema `directory` through one asyncpg pool (see the module docstring)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection in a transaction, committed on exit, rolled back on an exception; pass it as `tx`."""
        async with self._pool.acquire() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def _read(self, tx: asyncpg.Connection | None) -> AsyncIterator[asyncpg.Connection]:
        if tx is not None:
            yield tx
            return
        async with self._pool.acquire() as conn:
            yield conn

    @asynccontextmanager
    async def _write(self, tx: asyncpg.Connection | None) -> AsyncIterator[asyncpg.Connection]:
        """A transaction of its own, or a savepoint in `tx`; constraint violations become domain errors."""
        async with constraint_errors(_CONSTRAINT_ERRORS):
            if tx is not None:
                async with tx.transaction():
                    yield tx
            else:
                async with self._pool.acquire() as conn, conn.transaction():
                    yield conn

    # --- Regions ---

    async def get_region(
        self, code: str, *, tx: asyncpg.Connection | None = None
    ) -> directory_pb2.Region | None:
        async with self._read(tx) as conn:
            row = await conn.fetchrow(GET_REGION, code)
        return None if row is None else _region(row)

    async def list_regions(
        self, page_size: int, after_code: str | None = None, *, tx: asyncpg.Connection | None = None
    ) -> tuple[list[directory_pb2.Region], str | None]:
        async with self._read(tx) as conn:
            rows = await conn.fetch(LIST_REGIONS, after_code, _limit(page_size))
        page, next_key = _split_page(rows, page_size, "code")
        return [_region(row) for row in page], next_key

    # --- GHTs ---

    async def get_ght(self, ght_id: str, *, tx: asyncpg.Connection | None = None) -> directory_pb2.Ght | None:
        async with self._read(tx) as conn:
            row = await conn.fetchrow(GET_GHT, ght_id)
        return None if row is None else _ght(row)

    async def list_ghts(
        self,
        page_size: int,
        after_id: str | None = None,
        region: str | None = None,
        *,
        tx: asyncpg.Connection | None = None,
    ) -> tuple[list[directory_pb2.Ght], str | None]:
        async with self._read(tx) as conn:
            rows = await conn.fetch(LIST_GHTS, after_id, region, _limit(page_size))
        page, next_key = _split_page(rows, page_size, "ght_id")
        return [_ght(row) for row in page], next_key

    async def create_ght(
        self,
        ght_id: str,
        *,
        display_name: str,
        region: str,
        support_finess: str | None = None,
        tx: asyncpg.Connection | None = None,
    ) -> directory_pb2.Ght:
        """Raises AlreadyExists GHT_EXISTS, FailedPrecondition UNKNOWN_REGION / UNKNOWN_ESTABLISHMENT."""
        async with self._write(tx) as conn:
            row = await conn.fetchrow(INSERT_GHT, ght_id, display_name, region, support_finess or None)
        return _ght(row)

    async def defer_ght_support_check(self, tx: asyncpg.Connection) -> None:
        """Check GHTs' support establishments at commit: for loading GHTs before their establishments."""
        await tx.execute(DEFER_GHT_SUPPORT_CHECK)

    # --- Establishments ---

    async def get_establishment(
        self, finess: str, *, tx: asyncpg.Connection | None = None
    ) -> directory_pb2.Establishment | None:
        async with self._read(tx) as conn:
            row = await conn.fetchrow(GET_ESTABLISHMENT, finess)
        return None if row is None else _establishment(row)

    async def list_establishments(
        self,
        page_size: int,
        after_finess: str | None = None,
        ght: str | None = None,
        region: str | None = None,
        *,
        tx: asyncpg.Connection | None = None,
    ) -> tuple[list[directory_pb2.Establishment], str | None]:
        async with self._read(tx) as conn:
            rows = await conn.fetch(LIST_ESTABLISHMENTS, after_finess, ght, region, _limit(page_size))
        page, next_key = _split_page(rows, page_size, "finess")
        return [_establishment(row) for row in page], next_key

    async def create_establishment(
        self,
        finess: str,
        *,
        display_name: str,
        kind: directory_pb2.Establishment.Kind.ValueType,
        ght: str | None,
        region: str,
        time_zone: str,
        tx: asyncpg.Connection | None = None,
    ) -> directory_pb2.Establishment:
        """The overseas flag comes from the region.

        Raises AlreadyExists ESTABLISHMENT_EXISTS; FailedPrecondition UNKNOWN_REGION, UNKNOWN_GHT,
        GHT_IN_OTHER_REGION; InvalidArgument for a malformed FINESS or an unknown time zone.
        """
        async with self._write(tx) as conn:
            overseas = await conn.fetchval(GET_REGION_OVERSEAS, region)
            if overseas is None:
                raise FailedPrecondition("UNKNOWN_REGION", "no such region", {"region": f"regions/{region}"})
            if ght:
                await self._check_ght_region(conn, ght, region)
            row = await conn.fetchrow(
                INSERT_ESTABLISHMENT,
                finess,
                display_name,
                Kind.Name(kind),
                ght or None,
                region,
                time_zone,
                overseas,
            )
        return _establishment(row)

    async def update_establishment(
        self, finess: str, changes: EstablishmentChanges, *, tx: asyncpg.Connection | None = None
    ) -> directory_pb2.Establishment | None:
        """Applies the masked fields; None when no such establishment."""
        async with self._write(tx) as conn:
            ght = changes.get("ght") or None
            if "ght" in changes and ght is not None:
                current = await conn.fetchrow(GET_ESTABLISHMENT, finess)
                if current is None:
                    return None
                await self._check_ght_region(conn, ght, current["region_code"])
            row = await conn.fetchrow(
                UPDATE_ESTABLISHMENT,
                finess,
                "display_name" in changes,
                changes.get("display_name"),
                "ght" in changes,
                ght,
                "time_zone" in changes,
                changes.get("time_zone"),
            )
        return None if row is None else _establishment(row)

    @staticmethod
    async def _check_ght_region(conn: asyncpg.Connection, ght: str, region: str) -> None:
        # The (ght, region) foreign key holds the rule; this read only tells the two refusals apart.
        ght_region = await conn.fetchval(GET_GHT_REGION, ght)
        if ght_region is None:
            raise FailedPrecondition("UNKNOWN_GHT", "no such GHT", {"ght": f"ghts/{ght}"})
        if ght_region != region:
            raise FailedPrecondition(
                "GHT_IN_OTHER_REGION",
                "a GHT groups establishments of its own region",
                {"ght": f"ghts/{ght}", "region": f"regions/{region}"},
            )

    # --- Practitioners ---

    async def get_practitioner(
        self, rpps: str, *, tx: asyncpg.Connection | None = None
    ) -> directory_pb2.Practitioner | None:
        async with self._read(tx) as conn:
            row = await conn.fetchrow(GET_PRACTITIONER, rpps)
        return None if row is None else _practitioner(row)

    async def list_practitioners(
        self,
        page_size: int,
        after_rpps: str | None = None,
        profession: practice_pb2.Profession.ValueType | None = None,
        specialty: practice_pb2.Specialty.ValueType | None = None,
        establishment: str | None = None,
        ght: str | None = None,
        region: str | None = None,
        *,
        tx: asyncpg.Connection | None = None,
    ) -> tuple[list[directory_pb2.Practitioner], str | None]:
        """Filters combine with AND; establishment / ght / region match any of the practice places."""
        async with self._read(tx) as conn:
            rows = await conn.fetch(
                LIST_PRACTITIONERS,
                after_rpps,
                None if profession is None else Profession.Name(profession),
                None if specialty is None else Specialty.Name(specialty),
                establishment,
                ght,
                region,
                _limit(page_size),
            )
        page, next_key = _split_page(rows, page_size, "rpps")
        return [_practitioner(row) for row in page], next_key

    async def create_practitioner(
        self,
        rpps: str,
        *,
        family_name: str,
        given_name: str,
        profession: practice_pb2.Profession.ValueType,
        specialty: practice_pb2.Specialty.ValueType,
        sector: practice_pb2.ConventionSector.ValueType,
        practice_places: Sequence[str],
        active: bool = True,
        tx: asyncpg.Connection | None = None,
    ) -> directory_pb2.Practitioner:
        """A practitioner and its practice places (FINESS).

        Raises AlreadyExists PRACTITIONER_EXISTS, FailedPrecondition UNKNOWN_ESTABLISHMENT, InvalidArgument.
        """
        places = _unique(practice_places)
        if not places:
            raise InvalidArgument.one("practitioner.practice_places", "at least one practice place")
        async with self._write(tx) as conn:
            await conn.execute(
                INSERT_PRACTITIONER,
                rpps,
                family_name,
                given_name,
                Profession.Name(profession),
                Specialty.Name(specialty),
                ConventionSector.Name(sector),
                active,
            )
            await conn.execute(INSERT_PRACTICE_PLACES, rpps, places)
            row = await conn.fetchrow(GET_PRACTITIONER, rpps)
        return _practitioner(row)

    async def update_practitioner(
        self, rpps: str, changes: PractitionerChanges, *, tx: asyncpg.Connection | None = None
    ) -> directory_pb2.Practitioner | None:
        """Applies the masked fields (practice places are replaced); None when no such practitioner."""
        specialty = changes.get("specialty")
        sector = changes.get("sector")
        places = _unique(changes.get("practice_places", ()))
        if "practice_places" in changes and not places:
            raise InvalidArgument.one("practitioner.practice_places", "at least one practice place")
        async with self._write(tx) as conn:
            updated = await conn.fetchval(
                UPDATE_PRACTITIONER,
                rpps,
                "family_name" in changes,
                changes.get("family_name"),
                "given_name" in changes,
                changes.get("given_name"),
                specialty is not None,
                None if specialty is None else Specialty.Name(specialty),
                sector is not None,
                None if sector is None else ConventionSector.Name(sector),
                "active" in changes,
                changes.get("active"),
            )
            if updated is None:
                return None
            if "practice_places" in changes:
                await conn.execute(DELETE_OTHER_PRACTICE_PLACES, rpps, places)
                await conn.execute(INSERT_PRACTICE_PLACES, rpps, places)
            row = await conn.fetchrow(GET_PRACTITIONER, rpps)
        return _practitioner(row)

    # --- Expertise offers ---

    async def get_expertise_offer(
        self, offer_id: str, *, tx: asyncpg.Connection | None = None
    ) -> directory_pb2.ExpertiseOffer | None:
        async with self._read(tx) as conn:
            row = await conn.fetchrow(GET_EXPERTISE_OFFER, offer_id)
        return None if row is None else _expertise_offer(row)

    async def list_expertise_offers(
        self,
        page_size: int,
        after_id: str | None = None,
        specialty: practice_pb2.Specialty.ValueType | None = None,
        ght: str | None = None,
        region: str | None = None,
        member: str | None = None,
        *,
        tx: asyncpg.Connection | None = None,
    ) -> tuple[list[directory_pb2.ExpertiseOffer], str | None]:
        """`region` selects region-wide pools of that region; `member` is an RPPS."""
        async with self._read(tx) as conn:
            rows = await conn.fetch(
                LIST_EXPERTISE_OFFERS,
                after_id,
                None if specialty is None else Specialty.Name(specialty),
                ght,
                region,
                member,
                _limit(page_size),
            )
        page, next_key = _split_page(rows, page_size, "offer_id")
        return [_expertise_offer(row) for row in page], next_key

    async def create_expertise_offer(
        self,
        offer_id: str,
        *,
        display_name: str,
        specialty: practice_pb2.Specialty.ValueType,
        ght: str | None = None,
        region: str | None = None,
        members: Sequence[str],
        backup_rpps: str | None = None,
        accepting: bool = True,
        tx: asyncpg.Connection | None = None,
    ) -> directory_pb2.ExpertiseOffer:
        """A pool of one GHT or one region (exactly one of `ght`, `region`); members and backup are RPPS.

        Raises AlreadyExists EXPERTISE_OFFER_EXISTS; FailedPrecondition UNKNOWN_GHT, UNKNOWN_REGION,
        UNKNOWN_PRACTITIONER, EXPERT_NOT_MEDICAL; InvalidArgument.
        """
        member_rpps = _unique(members)
        if not member_rpps:
            raise InvalidArgument.one("members", "at least one member")
        async with self._write(tx) as conn:
            wanted = [*member_rpps, backup_rpps] if backup_rpps else member_rpps
            professions: dict[str, str] = {
                row["rpps"]: row["profession"] for row in await conn.fetch(GET_PROFESSIONS, wanted)
            }
            unknown = [rpps for rpps in wanted if rpps not in professions]
            if unknown:
                raise FailedPrecondition(
                    "UNKNOWN_PRACTITIONER",
                    "no such practitioner",
                    {"practitioners": ",".join(f"practitioners/{rpps}" for rpps in unknown)},
                )
            not_medical = [rpps for rpps in wanted if professions[rpps] not in MEDICAL_PROFESSIONS]
            if not_medical:
                raise FailedPrecondition(
                    "EXPERT_NOT_MEDICAL",
                    _NOT_MEDICAL,
                    {"practitioners": ",".join(f"practitioners/{rpps}" for rpps in not_medical)},
                )
            await conn.execute(
                INSERT_EXPERTISE_OFFER,
                offer_id,
                display_name,
                Specialty.Name(specialty),
                ght or None,
                region or None,
                backup_rpps or None,
                professions[backup_rpps] if backup_rpps else None,
                accepting,
            )
            await conn.execute(
                INSERT_EXPERTISE_OFFER_MEMBERS, offer_id, member_rpps, [professions[r] for r in member_rpps]
            )
            row = await conn.fetchrow(GET_EXPERTISE_OFFER, offer_id)
        return _expertise_offer(row)

    # --- Patients ---
    # `scope` is the caller's FINESS for a caller restricted to its GHT, None for an unrestricted one (see
    # _PATIENT_VIEWS): reads return the patient as that caller may see it, None when it may not.

    async def in_scope(self, scope: str | None, finess: str, *, tx: asyncpg.Connection | None = None) -> bool:
        """Whether establishment `finess` is the caller's or in the caller's GHT (always, unrestricted)."""
        if scope is None:
            return True
        async with self._read(tx) as conn:
            return bool(await conn.fetchval(IN_SCOPE, scope, finess))

    async def get_patient(
        self, patient_id: uuid.UUID, *, scope: str | None = None, tx: asyncpg.Connection | None = None
    ) -> directory_pb2.Patient | None:
        async with self._read(tx) as conn:
            row = await conn.fetchrow(GET_PATIENT, scope, patient_id)
        return None if row is None else _patient(row, scoped=scope is not None)

    async def list_patients(
        self,
        page_size: int,
        after_uuid: uuid.UUID | None = None,
        finess: str | None = None,
        *,
        scope: str | None = None,
        tx: asyncpg.Connection | None = None,
    ) -> tuple[list[directory_pb2.Patient], uuid.UUID | None]:
        """Patients known at an establishment (by FINESS), or all patients when `finess` is None."""
        async with self._read(tx) as conn:
            rows = await conn.fetch(LIST_PATIENTS, scope, after_uuid, finess, _limit(page_size))
        page, next_key = _split_page(rows, page_size, "patient_id")
        return [_patient(row, scoped=scope is not None) for row in page], next_key

    async def create_patient(
        self,
        *,
        matricule: str,
        oid: str,
        birth_family_name: str,
        birth_given_names: str,
        birth_date: date,
        sex: directory_pb2.Sex.ValueType,
        birth_place_code: str,
        identity_status: directory_pb2.IdentityStatus.ValueType,
        local_identifier: tuple[str, str] | None = None,
        patient_id: uuid.UUID | None = None,
        scope: str | None = None,
        tx: asyncpg.Connection | None = None,
    ) -> PatientCreation:
        """Registers an INS identity for a caller, linking `local_identifier` (FINESS, IPP) in the same
        transaction; `patient_id` is for loaders with stable ids (the demo seed).

        - A new INS: a new patient.
        - An INS the caller sees: that patient (`traits_match` False when its strict traits differ: an
          identity-vigilance alert for the caller, never a silent overwrite).
        - An INS only other GHTs know (restricted caller): registered for the caller's GHT exactly as a new
          one would be — the same record when the traits match (the INS is national), else a conflict record
          for the hub's identity vigilance — and answered with only what the caller sent and its GHT's data.
        """
        sex_name = Sex.Name(sex)
        status_name = IdentityStatus.Name(identity_status)
        traits = (birth_family_name, birth_given_names, birth_date, sex_name, birth_place_code)
        values = (matricule, oid, *traits[:3], sex_name, birth_place_code, status_name)
        async with self._write(tx) as conn:
            new_id = patient_id or uuid.uuid4()
            if await conn.fetchval(INSERT_PATIENT, new_id, *values) is not None:
                return await self._registered(
                    conn, new_id, status_name, local_identifier, scope, created=True, conflict=False
                )
            if scope is None:
                records = await conn.fetch(GET_INS_RECORDS, oid, matricule)
                known = records[0]
            else:
                visible = await conn.fetch(VISIBLE_INS_RECORDS, scope, oid, matricule)
                if not visible:
                    return await self._register_known_elsewhere(
                        conn, values, traits, status_name, local_identifier, scope
                    )
                known = visible[0]
            if _traits(known) != traits:
                found = await conn.fetchrow(GET_PATIENT, scope, known["patient_id"])
                return PatientCreation(
                    patient=_patient(found, scope is not None), created=False, traits_match=False
                )
            if local_identifier is not None:
                await self._link(conn, known["patient_id"], *local_identifier)
            row = await conn.fetchrow(GET_PATIENT, scope, known["patient_id"])
        return PatientCreation(patient=_patient(row, scoped=scope is not None), created=False)

    async def _register_known_elsewhere(
        self,
        conn: asyncpg.Connection,
        values: tuple[object, ...],
        traits: tuple[object, ...],
        status_name: str,
        local_identifier: tuple[str, str] | None,
        scope: str,
    ) -> PatientCreation:
        matricule, oid = values[0], values[1]
        records = await conn.fetch(GET_INS_RECORDS, oid, matricule)
        same = next((r for r in records if _traits(r) == traits), None)
        if same is not None:
            return await self._registered(
                conn, same["patient_id"], status_name, local_identifier, scope, created=False, conflict=False
            )
        conflict_id = uuid.uuid4()
        await conn.execute(INSERT_CONFLICTING_PATIENT, conflict_id, *values, records[0]["patient_id"])
        return await self._registered(
            conn, conflict_id, status_name, local_identifier, scope, created=True, conflict=True
        )

    async def _registered(
        self,
        conn: asyncpg.Connection,
        patient_id: uuid.UUID,
        status_name: str,
        local_identifier: tuple[str, str] | None,
        scope: str | None,
        *,
        created: bool,
        conflict: bool,
    ) -> PatientCreation:
        """The answer to a registration that brought the patient into the caller's reach (or created it)."""
        if scope is not None:
            await conn.execute(SET_DOMAIN_STATUS, patient_id, scope, status_name)
        if local_identifier is not None:
            await self._link(conn, patient_id, *local_identifier)
        row = await conn.fetchrow(GET_PATIENT, scope, patient_id)
        if row is None:
            # Registered without a local identifier of the caller's GHT: the caller does not see the patient
            # (nobody in its GHT knows it). Answer with what it sent, as of now, known elsewhere or not.
            row = dict(await conn.fetchrow(GET_PATIENT, None, patient_id))
            row.update(
                identity_status=status_name,
                create_time=await conn.fetchval(TRANSACTION_TIME),
                local_finess=[],
                local_ipps=[],
            )
            row["update_time"] = row["create_time"]
        return PatientCreation(
            patient=_patient(row, scoped=scope is not None), created=created, conflict=conflict
        )

    async def update_patient_status(
        self,
        patient_id: uuid.UUID,
        status: directory_pb2.IdentityStatus.ValueType,
        *,
        scope: str | None = None,
        tx: asyncpg.Connection | None = None,
    ) -> directory_pb2.Patient | None:
        """Records the identity status: the caller's domain's (restricted), or the hub's (unrestricted).

        None when no such patient, or the caller does not see it.
        """
        async with self._write(tx) as conn:
            if await conn.fetchrow(GET_PATIENT, scope, patient_id) is None:
                return None
            if scope is None:
                await conn.execute(UPDATE_PATIENT_STATUS, patient_id, IdentityStatus.Name(status))
            else:
                await conn.execute(SET_DOMAIN_STATUS, patient_id, scope, IdentityStatus.Name(status))
            row = await conn.fetchrow(GET_PATIENT, scope, patient_id)
        return _patient(row, scoped=scope is not None)

    async def ins_matches(
        self,
        patient_id: uuid.UUID,
        *,
        matricule: str,
        oid: str,
        birth_family_name: str,
        birth_given_names: str,
        birth_date: date,
        sex: directory_pb2.Sex.ValueType,
        birth_place_code: str,
        tx: asyncpg.Connection | None = None,
    ) -> bool:
        """Whether `patient_id` is a record of exactly this INS identity (matricule, OID, strict traits)."""
        async with self._read(tx) as conn:
            row = await conn.fetchrow(GET_PATIENT_INS, patient_id)
        if row is None:
            return False
        traits = (birth_family_name, birth_given_names, birth_date, Sex.Name(sex), birth_place_code)
        return (row["matricule"], row["oid"]) == (matricule, oid) and _traits(row) == traits

    async def link_local_identifier(
        self,
        patient_id: uuid.UUID,
        finess: str,
        ipp: str,
        *,
        scope: str | None = None,
        domain_status: directory_pb2.IdentityStatus.ValueType | None = None,
        tx: asyncpg.Connection | None = None,
    ) -> directory_pb2.Patient | None:
        """Records that `finess` knows the patient as `ipp` (linking the same pair again is a no-op), and with
        `domain_status` the status the caller's domain records; returns the patient as `scope` sees it.

        None when no such patient. Raises AlreadyExists LOCAL_IDENTIFIER_IN_USE (the IPP names another patient
        there) or PATIENT_HAS_LOCAL_IDENTIFIER (the establishment knows the patient under another IPP);
        FailedPrecondition UNKNOWN_ESTABLISHMENT.
        """
        async with self._write(tx) as conn:
            if not await conn.fetchval(PATIENT_EXISTS, patient_id):
                return None
            if scope is not None and domain_status is not None:
                await conn.execute(SET_DOMAIN_STATUS, patient_id, scope, IdentityStatus.Name(domain_status))
            await self._link(conn, patient_id, finess, ipp)
            row = await conn.fetchrow(GET_PATIENT, scope, patient_id)
        return None if row is None else _patient(row, scoped=scope is not None)

    @staticmethod
    async def _link(conn: asyncpg.Connection, patient_id: uuid.UUID, finess: str, ipp: str) -> None:
        # The link's own create_time is the patient's last change as every view computes it: the patient row
        # is not touched, so that a link made in one GHT is not a change another GHT can observe.
        if await conn.fetchval(INSERT_LOCAL_IDENTIFIER, finess, ipp, patient_id) is not None:
            return
        for row in await conn.fetch(GET_LOCAL_IDENTIFIER_CONFLICTS, finess, ipp, patient_id):
            if row["ipp"] == ipp and row["patient_id"] != patient_id:
                raise _CONSTRAINT_ERRORS["patient_local_ids_pkey"]()
            if row["ipp"] != ipp and row["patient_id"] == patient_id:
                raise _CONSTRAINT_ERRORS["patient_local_ids_patient_key"]()
        # The same (establishment, IPP, patient) was already recorded: nothing to do.

    async def resolve_by_local_identifier(
        self, finess: str, ipp: str, *, scope: str | None = None, tx: asyncpg.Connection | None = None
    ) -> directory_pb2.Patient | None:
        async with self._read(tx) as conn:
            row = await conn.fetchrow(RESOLVE_BY_LOCAL_IDENTIFIER, scope, finess, ipp)
        return None if row is None else _patient(row, scoped=scope is not None)

    async def resolve_by_matricule(
        self,
        matricule: str,
        oid: str | None = None,
        *,
        scope: str | None = None,
        tx: asyncpg.Connection | None = None,
    ) -> directory_pb2.Patient | None:
        """The patient of a matricule (in the OID's domain when given) among those the caller sees.

        Raises FailedPrecondition AMBIGUOUS_MATRICULE when the caller sees the matricule in two records (e.g.
        an INS-NIR and a test NIR) and no OID says which.
        """
        async with self._read(tx) as conn:
            rows = await conn.fetch(RESOLVE_BY_MATRICULE, scope, matricule, oid)
        if len(rows) > 1:
            raise FailedPrecondition("AMBIGUOUS_MATRICULE", "the matricule is known in several INS domains")
        return _patient(rows[0], scoped=scope is not None) if rows else None

    # --- Idempotency and loaders ---

    async def claim_seed(self, seed: str, *, tx: asyncpg.Connection) -> bool:
        """Marks data set `seed` as loaded in `tx`; False if it already was (waits for a concurrent load)."""
        claimed = await tx.fetchval(CLAIM_SEED, seed)
        return claimed is not None
