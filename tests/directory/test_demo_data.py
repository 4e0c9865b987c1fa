from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from parcours.directory.v1 import directory_pb2
from parcours.type.v1 import practice_pb2

from services.directory import demo
from services.directory.identifiers import finess_violations, nir_violations, rpps_violations

REGIONS_MIGRATION = (
    Path(__file__).resolve().parents[2]
    / "services"
    / "directory"
    / "migrations"
    / "0002.directory-regions.sql"
)
# Départements of Auvergne-Rhône-Alpes.
ARA_DEPARTEMENTS = {"01", "03", "07", "15", "26", "38", "42", "43", "63", "69", "73", "74"}
SPECIALTIES = {
    "CARDIOLOGY",
    "DERMATOLOGY",
    "PSYCHIATRY",
    "ENDOCRINOLOGY",
    "PEDIATRICS",
    "OPHTHALMOLOGY",
    "GYNECOLOGY",
    "NEUROLOGY",
    "PULMONOLOGY",
    "GERIATRICS",
    "NEPHROLOGY",
    "ONCOLOGY",
}
ESTABLISHMENTS = {e.finess: e for e in demo.DEMO_ESTABLISHMENTS}
PRACTITIONERS = {p.rpps: p for p in demo.DEMO_PRACTITIONERS}


def test_every_demo_identifier_is_valid() -> None:
    for establishment in demo.DEMO_ESTABLISHMENTS:
        assert finess_violations(establishment.finess, "finess") == [], establishment
    for ght in demo.DEMO_GHTS:
        assert finess_violations(ght.support_finess, "support") == [], ght
    for practitioner in demo.DEMO_PRACTITIONERS:
        assert rpps_violations(practitioner.rpps, "rpps") == [], practitioner
        # Obviously synthetic: "10000" + sequence + "01".
        assert re.fullmatch(r"10000[0-9]{4}01", practitioner.rpps), practitioner
        for finess in practitioner.practice_places:
            assert finess_violations(finess, "place") == []
    for patient in demo.DEMO_PATIENTS:
        assert nir_violations(patient.matricule, "matricule") == [], patient


def test_identifiers_are_unique() -> None:
    for values in (
        [r.code for r in demo.REGIONS],
        [g.ght_id for g in demo.DEMO_GHTS],
        [e.finess for e in demo.DEMO_ESTABLISHMENTS],
        [p.rpps for p in demo.DEMO_PRACTITIONERS],
        [o.offer_id for o in demo.DEMO_EXPERTISE_OFFERS],
        [p.patient_id for p in demo.DEMO_PATIENTS],
        [p.matricule for p in demo.DEMO_PATIENTS],
    ):
        assert len(values) == len(set(values))


def test_eighteen_ars_regions() -> None:
    assert len(demo.REGIONS) == 18
    metropolitan = [r for r in demo.REGIONS if not r.overseas]
    overseas = {r.code: r.time_zone for r in demo.REGIONS if r.overseas}
    assert len(metropolitan) == 13
    assert {r.time_zone for r in metropolitan} == {"Europe/Paris"}
    assert overseas == {
        "01": "America/Guadeloupe",
        "02": "America/Martinique",
        "03": "America/Cayenne",
        "04": "Indian/Reunion",
        "06": "Indian/Mayotte",
    }
    by_code = {r.code: r.display_name for r in demo.REGIONS}
    assert by_code["84"] == "Auvergne-Rhône-Alpes"
    assert by_code["94"] == "Corse"


def test_regions_migration_inserts_exactly_the_reference_regions() -> None:
    sql = REGIONS_MIGRATION.read_text(encoding="utf-8")
    rows = re.findall(r"\('([0-9]{2})', '((?:[^']|'')*)', '([^']+)', (true|false)\)", sql)
    from_sql = {(code, name.replace("''", "'"), zone, flag == "true") for code, name, zone, flag in rows}
    assert len(rows) == 18
    assert from_sql == {(r.code, r.display_name, r.time_zone, r.overseas) for r in demo.REGIONS}


def test_three_ghts_in_auvergne_rhone_alpes_with_their_support() -> None:
    assert {g.ght_id for g in demo.DEMO_GHTS} == {"ght-loire", "ght-alpes-dauphine", "ght-val-rhone"}
    for ght in demo.DEMO_GHTS:
        assert ght.region_code == "84"
        support = ESTABLISHMENTS[ght.support_finess]
        assert support.ght_id == ght.ght_id
        assert support.kind == "KIND_LEGAL_ENTITY"


def test_twelve_establishments_over_three_ghts_and_one_overseas() -> None:
    metropolitan = [e for e in demo.DEMO_ESTABLISHMENTS if e.region_code == "84"]
    assert len(metropolitan) == 12
    assert Counter(e.ght_id for e in metropolitan) == {g.ght_id: 4 for g in demo.DEMO_GHTS}
    for establishment in metropolitan:
        assert establishment.finess[:2] in ARA_DEPARTEMENTS
        assert establishment.time_zone == "Europe/Paris"
    assert len({e.finess[:2] for e in metropolitan}) >= 6
    regions = {r.code: r for r in demo.REGIONS}
    overseas = [e for e in demo.DEMO_ESTABLISHMENTS if regions[e.region_code].overseas]
    assert len(overseas) == 1
    [reunion] = overseas
    assert reunion.finess.startswith("974")
    assert (reunion.region_code, reunion.time_zone, reunion.ght_id) == ("04", "Indian/Reunion", None)
    for establishment in demo.DEMO_ESTABLISHMENTS:
        assert establishment.kind in directory_pb2.Establishment.Kind.DESCRIPTOR.values_by_name
        assert establishment.time_zone == regions[establishment.region_code].time_zone


def test_about_fifty_practitioners_of_the_listed_professions() -> None:
    assert 45 <= len(demo.DEMO_PRACTITIONERS) <= 60
    physicians = [p for p in demo.DEMO_PRACTITIONERS if p.profession == "PROFESSION_PHYSICIAN"]
    gps = [p for p in physicians if p.specialty == "SPECIALTY_GENERAL_MEDICINE"]
    assert 15 <= len(gps) <= 20
    assert {"CONVENTION_SECTOR_1", "CONVENTION_SECTOR_2_OPTAM", "CONVENTION_SECTOR_2"} <= {
        p.sector for p in gps
    }
    specialists = Counter(p.specialty.removeprefix("SPECIALTY_") for p in physicians if p not in gps)
    assert set(specialists) == SPECIALTIES
    assert all(2 <= count <= 3 for count in specialists.values()), specialists
    professions = Counter(p.profession for p in demo.DEMO_PRACTITIONERS)
    assert 5 <= professions["PROFESSION_NURSE"] <= 7
    for profession in ("PHARMACIST", "MIDWIFE", "DENTIST", "PHYSIOTHERAPIST"):
        assert professions["PROFESSION_" + profession] == 1


def test_practitioner_enums_and_places() -> None:
    for practitioner in demo.DEMO_PRACTITIONERS:
        assert practitioner.profession in practice_pb2.Profession.DESCRIPTOR.values_by_name
        assert practitioner.specialty in practice_pb2.Specialty.DESCRIPTOR.values_by_name
        assert practitioner.sector in practice_pb2.ConventionSector.DESCRIPTOR.values_by_name
        if practitioner.profession != "PROFESSION_PHYSICIAN":
            assert practitioner.specialty == "SPECIALTY_NONE"
        assert practitioner.practice_places
        assert set(practitioner.practice_places) <= set(ESTABLISHMENTS)
    at_reunion = [p for p in demo.DEMO_PRACTITIONERS if demo.CH_SUD_SAUVAGE in p.practice_places]
    assert at_reunion


def test_offer_members_are_specialists_of_the_offer() -> None:
    ght_ids = {g.ght_id for g in demo.DEMO_GHTS}
    scopes = Counter("ght" if o.ght_id else "region" for o in demo.DEMO_EXPERTISE_OFFERS)
    assert scopes["ght"] >= 3
    assert scopes["region"] >= 3
    for offer in demo.DEMO_EXPERTISE_OFFERS:
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]{1,62}", offer.offer_id)
        assert (offer.ght_id is None) != (offer.region_code is None)
        assert offer.ght_id is None or offer.ght_id in ght_ids
        assert offer.members
        experts = [*offer.members, *([offer.backup_rpps] if offer.backup_rpps else [])]
        assert len(experts) == len(set(experts)), offer
        for rpps in experts:
            practitioner = PRACTITIONERS[rpps]
            assert practitioner.profession == "PROFESSION_PHYSICIAN"
            assert practitioner.specialty == offer.specialty, (offer.offer_id, rpps)
    assert sum(1 for o in demo.DEMO_EXPERTISE_OFFERS if o.backup_rpps) >= len(demo.DEMO_EXPERTISE_OFFERS) - 1


def test_patients_have_consistent_ins_traits() -> None:
    assert 6 <= len(demo.DEMO_PATIENTS) <= 8
    statuses = {p.identity_status for p in demo.DEMO_PATIENTS}
    assert {
        "IDENTITY_STATUS_QUALIFIED",
        "IDENTITY_STATUS_VALIDATED",
        "IDENTITY_STATUS_PROVISIONAL",
    } <= statuses
    assert statuses <= set(directory_pb2.IdentityStatus.keys())
    for index, patient in enumerate(demo.DEMO_PATIENTS, start=1):
        assert patient.oid == "1.2.250.1.213.1.4.10"
        assert patient.patient_id == demo.demo_patient_id(index)
        assert patient.matricule[0] == {"SEX_MALE": "1", "SEX_FEMALE": "2"}[patient.sex]
        assert patient.matricule[1:5] == f"{patient.birth_date.year % 100:02d}{patient.birth_date.month:02d}"
        # Département + commune of the NIR = INSEE code of the birth place (97x + 2 digits overseas).
        assert patient.matricule[5:10] == patient.birth_place_code
        assert 1 <= len(patient.local_identifiers) <= 2
        assert {local.finess for local in patient.local_identifiers} <= set(ESTABLISHMENTS)
        assert len({local.finess for local in patient.local_identifiers}) == len(patient.local_identifiers)


def test_a_corsican_birth_exercises_the_key_substitution() -> None:
    corsicans = [p for p in demo.DEMO_PATIENTS if p.matricule[5:7] in ("2A", "2B")]
    assert corsicans
    for patient in corsicans:
        substituted = (
            patient.matricule[:5] + {"2A": "19", "2B": "18"}[patient.matricule[5:7]] + patient.matricule[7:13]
        )
        assert int(patient.matricule[13:]) == 97 - int(substituted) % 97


def test_local_ipps_are_unique_per_establishment() -> None:
    pairs = [(local.finess, local.ipp) for p in demo.DEMO_PATIENTS for local in p.local_identifiers]
    assert len(pairs) == len(set(pairs))
