"""Reference regions and the demo region: fictional, well-formed data for development, demos and tests.

`REGIONS` is reference data (the 18 ARS regions, also inserted by migration 0002); everything else is a demo
of Auvergne-Rhône-Alpes (region 84) with three GHTs, plus one establishment in La Réunion so that an overseas
time zone and DROM tariffs are exercised. Nothing here names a real person or a real establishment:

- RPPS numbers are "10000" + a 4-digit sequence + "01" (10000000101, 10000000201, ...);
- FINESS numbers are the département + zeros + a 2-digit sequence + an arbitrary last character
  (420000017; 974000013 overseas): no check character is computed, its algorithm being unconfirmed.
  420000017, 380000024 and 974000013 are also establishments the test suite's PKI issues certificates to;
- patients carry test NIRs (OID 1.2.250.1.213.1.4.10, the INS test-NIR domain) whose key is computed by
  `nir_key`, and opaque ids drawn from a fixed namespace and their index, never from the NIR.

The Réunion establishment belongs to no GHT: the demo's GHTs are in region 84 and a GHT groups establishments
of its own region; it also exercises the "outside any GHT" case of the API.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

from services.directory.identifiers import nir_key

# INS OID of the test-NIR domain: demo identities can never be mistaken for real INS.
TEST_NIR_OID = "1.2.250.1.213.1.4.10"
# Fixed namespace of the demo patients' ids, so that they are the same in every environment.
DEMO_PATIENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://parcours.invalid/directory/demo/patients")
DEMO_REGION_CODE = "84"


@dataclass(frozen=True)
class RegionData:
    code: str
    display_name: str
    time_zone: str
    overseas: bool


@dataclass(frozen=True)
class DemoGht:
    ght_id: str
    display_name: str
    region_code: str
    support_finess: str


@dataclass(frozen=True)
class DemoEstablishment:
    finess: str
    display_name: str
    kind: str  # Establishment.Kind NAME
    ght_id: str | None
    region_code: str
    time_zone: str


@dataclass(frozen=True)
class DemoPractitioner:
    rpps: str
    family_name: str
    given_name: str
    profession: str  # parcours.type.v1.Profession NAME
    specialty: str  # parcours.type.v1.Specialty NAME
    sector: str  # parcours.type.v1.ConventionSector NAME
    practice_places: tuple[str, ...]  # FINESS


@dataclass(frozen=True)
class DemoExpertiseOffer:
    offer_id: str
    display_name: str
    specialty: str  # parcours.type.v1.Specialty NAME
    ght_id: str | None
    region_code: str | None
    members: tuple[str, ...]  # RPPS
    backup_rpps: str | None


@dataclass(frozen=True)
class DemoLocalIdentifier:
    finess: str
    ipp: str


@dataclass(frozen=True)
class DemoPatient:
    patient_id: uuid.UUID
    matricule: str
    oid: str
    birth_family_name: str
    birth_given_names: str
    birth_date: date
    sex: str  # parcours.directory.v1.Sex NAME
    birth_place_code: str  # INSEE code of the birth commune (99xxx: country abroad)
    identity_status: str  # parcours.directory.v1.IdentityStatus NAME
    local_identifiers: tuple[DemoLocalIdentifier, ...]


_PARIS = "Europe/Paris"

REGIONS: tuple[RegionData, ...] = (
    RegionData("01", "Guadeloupe", "America/Guadeloupe", True),
    RegionData("02", "Martinique", "America/Martinique", True),
    RegionData("03", "Guyane", "America/Cayenne", True),
    RegionData("04", "La Réunion", "Indian/Reunion", True),
    RegionData("06", "Mayotte", "Indian/Mayotte", True),
    RegionData("11", "Île-de-France", _PARIS, False),
    RegionData("24", "Centre-Val de Loire", _PARIS, False),
    RegionData("27", "Bourgogne-Franche-Comté", _PARIS, False),
    RegionData("28", "Normandie", _PARIS, False),
    RegionData("32", "Hauts-de-France", _PARIS, False),
    RegionData("44", "Grand Est", _PARIS, False),
    RegionData("52", "Pays de la Loire", _PARIS, False),
    RegionData("53", "Bretagne", _PARIS, False),
    RegionData("75", "Nouvelle-Aquitaine", _PARIS, False),
    RegionData("76", "Occitanie", _PARIS, False),
    RegionData("84", "Auvergne-Rhône-Alpes", _PARIS, False),
    RegionData("93", "Provence-Alpes-Côte d'Azur", _PARIS, False),
    RegionData("94", "Corse", _PARIS, False),
)

# --- GHTs and establishments -----------------------------------------------------------------------------

GHT_LOIRE = "ght-loire"
GHT_ALPES_DAUPHINE = "ght-alpes-dauphine"
GHT_VAL_RHONE = "ght-val-rhone"

# Establishments by role, so that the tables below read as a region rather than as numbers.
CH_FOREZ = "420000017"  # support of ght-loire
CH_FOREZ_FURANE = "420000025"
HG_PILAT = "420000033"
HL_VIVARAIS = "070000014"
CHU_BELLEDONNE = "380000024"  # support of ght-alpes-dauphine
H_CHARTREUSE = "380000032"
CH_BAUGES = "730000015"
HI_LEMAN = "740000013"
HOSPICES_VAL_RHONE = "690000019"  # support of ght-val-rhone
H_MONTS_OR = "690000027"
CH_DOMBES = "010000016"
CH_COLLINES = "260000011"
CH_SUD_SAUVAGE = "974000013"  # La Réunion, outside any GHT

DEMO_GHTS: tuple[DemoGht, ...] = (
    DemoGht(GHT_LOIRE, "GHT des Monts du Forez et du Vivarais", DEMO_REGION_CODE, CH_FOREZ),
    DemoGht(GHT_ALPES_DAUPHINE, "GHT Dauphiné-Belledonne et Savoies", DEMO_REGION_CODE, CHU_BELLEDONNE),
    DemoGht(GHT_VAL_RHONE, "GHT Val de Rhône, Dombes et Collines", DEMO_REGION_CODE, HOSPICES_VAL_RHONE),
)

_LEGAL = "KIND_LEGAL_ENTITY"
_SITE = "KIND_SITE"


def _ara(finess: str, display_name: str, kind: str, ght_id: str) -> DemoEstablishment:
    return DemoEstablishment(finess, display_name, kind, ght_id, DEMO_REGION_CODE, _PARIS)


DEMO_ESTABLISHMENTS: tuple[DemoEstablishment, ...] = (
    _ara(CH_FOREZ, "Centre hospitalier des Monts du Forez", _LEGAL, GHT_LOIRE),
    _ara(CH_FOREZ_FURANE, "CH des Monts du Forez, site de la Furane", _SITE, GHT_LOIRE),
    _ara(HG_PILAT, "Hôpital gériatrique des Crêts du Pilat", _SITE, GHT_LOIRE),
    _ara(HL_VIVARAIS, "Hôpital local du Haut-Vivarais", _SITE, GHT_LOIRE),
    _ara(CHU_BELLEDONNE, "Centre hospitalier universitaire Dauphiné-Belledonne", _LEGAL, GHT_ALPES_DAUPHINE),
    _ara(H_CHARTREUSE, "Hôpital de la Chartreuse-Vercors", _SITE, GHT_ALPES_DAUPHINE),
    _ara(CH_BAUGES, "Centre hospitalier des Bauges et du Lac", _SITE, GHT_ALPES_DAUPHINE),
    _ara(HI_LEMAN, "Hôpital intercommunal Léman-Aravis", _SITE, GHT_ALPES_DAUPHINE),
    _ara(HOSPICES_VAL_RHONE, "Hospices du Val de Rhône", _LEGAL, GHT_VAL_RHONE),
    _ara(H_MONTS_OR, "Hôpital des Monts d'Or et de Saône", _SITE, GHT_VAL_RHONE),
    _ara(CH_DOMBES, "Centre hospitalier de la Dombes aux Étangs", _SITE, GHT_VAL_RHONE),
    _ara(CH_COLLINES, "Centre hospitalier Drôme-des-Collines", _SITE, GHT_VAL_RHONE),
    DemoEstablishment(
        CH_SUD_SAUVAGE, "Centre hospitalier du Sud Sauvage", _SITE, None, "04", "Indian/Reunion"
    ),
)

# --- Practitioners -----------------------------------------------------------------------------------------

_PHYSICIAN = "PROFESSION_PHYSICIAN"
_S1 = "CONVENTION_SECTOR_1"
_S2_OPTAM = "CONVENTION_SECTOR_2_OPTAM"
_S2 = "CONVENTION_SECTOR_2"
_SALARIED = "CONVENTION_SECTOR_SALARIED"
_NONE = "SPECIALTY_NONE"


def _gp(rpps: str, family: str, given: str, sector: str, *places: str) -> DemoPractitioner:
    return DemoPractitioner(rpps, family, given, _PHYSICIAN, "SPECIALTY_GENERAL_MEDICINE", sector, places)


def _md(rpps: str, family: str, given: str, specialty: str, sector: str, *places: str) -> DemoPractitioner:
    return DemoPractitioner(rpps, family, given, _PHYSICIAN, "SPECIALTY_" + specialty, sector, places)


def _other(rpps: str, family: str, given: str, job: str, sector: str, *places: str) -> DemoPractitioner:
    return DemoPractitioner(rpps, family, given, "PROFESSION_" + job, _NONE, sector, places)


DEMO_PRACTITIONERS: tuple[DemoPractitioner, ...] = (
    # General practitioners (médecins généralistes), liberal in every sector.
    _gp("10000000101", "Martinon", "Claire", _S1, CH_FOREZ_FURANE),
    _gp("10000000201", "Peyrard", "Julien", _S1, HL_VIVARAIS),
    _gp("10000000301", "Faure-Brac", "Sandrine", _S2_OPTAM, CH_FOREZ),
    _gp("10000000401", "Rochebonne", "Mathieu", _S2, HG_PILAT),
    _gp("10000000501", "Vial-Cotte", "Élodie", _S1, H_CHARTREUSE),
    _gp("10000000601", "Guillemaud", "Thomas", _S1, CH_BAUGES),
    _gp("10000000701", "Bessonnat", "Agathe", _S2_OPTAM, HI_LEMAN),
    _gp("10000000801", "Chabanel", "Loïc", _S2, CHU_BELLEDONNE),
    _gp("10000000901", "Ravinet", "Hélène", _S1, H_MONTS_OR),
    _gp("10000001001", "Duchampt", "Romain", _S1, CH_DOMBES),
    _gp("10000001101", "Mangeret", "Lucie", _S2_OPTAM, CH_COLLINES),
    _gp("10000001201", "Perrachon", "Bastien", _S2, HOSPICES_VAL_RHONE),
    _gp("10000001301", "Brunel-Massot", "Inès", _S1, CH_DOMBES, H_MONTS_OR),
    _gp("10000001401", "Tardy-Ollier", "Pierre", _S1, CH_COLLINES),
    _gp("10000001501", "Payet-Lauret", "Nadia", _S1, CH_SUD_SAUVAGE),
    _gp("10000001601", "Hoarau-Vidot", "Kévin", _S2_OPTAM, CH_SUD_SAUVAGE),
    # Specialists, mostly salaried hospital physicians.
    _md("10000001701", "Montagnon", "Éric", "CARDIOLOGY", _SALARIED, CHU_BELLEDONNE),
    _md("10000001801", "Serpollet", "Anne", "CARDIOLOGY", _SALARIED, CH_FOREZ),
    _md("10000001901", "Delorme-Vincent", "Yanis", "CARDIOLOGY", _S2_OPTAM, HOSPICES_VAL_RHONE),
    _md("10000002001", "Chapuis-Roux", "Marion", "DERMATOLOGY", _SALARIED, CH_FOREZ),
    _md("10000002101", "Berthaud", "Samuel", "DERMATOLOGY", _SALARIED, CHU_BELLEDONNE),
    _md("10000002201", "Giraudier", "Lina", "DERMATOLOGY", _S2, HOSPICES_VAL_RHONE),
    _md("10000002301", "Fayolle-Tisseur", "Camille", "PSYCHIATRY", _SALARIED, HOSPICES_VAL_RHONE),
    _md("10000002401", "Rivollier", "Maxime", "PSYCHIATRY", _SALARIED, CH_FOREZ),
    _md("10000002501", "Jacquemet", "Sarah", "PSYCHIATRY", _SALARIED, CH_BAUGES),
    _md("10000002601", "Bonnardel", "Olivier", "ENDOCRINOLOGY", _SALARIED, CHU_BELLEDONNE),
    _md("10000002701", "Pralus", "Léa", "ENDOCRINOLOGY", _SALARIED, HOSPICES_VAL_RHONE),
    _md("10000002801", "Thivillier", "Monique", "GERIATRICS", _SALARIED, HG_PILAT),
    _md("10000002901", "Cellard", "Antoine", "GERIATRICS", _SALARIED, H_CHARTREUSE),
    _md("10000003001", "Mazenod", "Juliette", "GERIATRICS", _SALARIED, H_MONTS_OR),
    _md("10000003101", "Grangeon", "Paul", "PEDIATRICS", _SALARIED, CHU_BELLEDONNE),
    _md("10000003201", "Rabatel", "Manon", "PEDIATRICS", _SALARIED, HOSPICES_VAL_RHONE),
    _md("10000003301", "Vacheron", "Hugo", "OPHTHALMOLOGY", _S2_OPTAM, CH_FOREZ),
    _md("10000003401", "Bouvardel", "Chloé", "OPHTHALMOLOGY", _SALARIED, HI_LEMAN),
    _md("10000003501", "Rey-Coquais", "Émilie", "GYNECOLOGY", _SALARIED, CH_COLLINES),
    _md("10000003601", "Desgranges", "Nicolas", "GYNECOLOGY", _S2, CHU_BELLEDONNE),
    _md("10000003701", "Perret-Gentil", "Victor", "NEUROLOGY", _SALARIED, HOSPICES_VAL_RHONE),
    _md("10000003801", "Journoud", "Alice", "NEUROLOGY", _SALARIED, CH_FOREZ),
    _md("10000003901", "Bouchardy", "Damien", "PULMONOLOGY", _SALARIED, CHU_BELLEDONNE),
    _md("10000004001", "Chomat", "Laure", "PULMONOLOGY", _SALARIED, HOSPICES_VAL_RHONE),
    _md("10000004101", "Grivolat", "Sébastien", "NEPHROLOGY", _SALARIED, CH_FOREZ),
    _md("10000004201", "Fontvieille", "Margaux", "NEPHROLOGY", _SALARIED, HOSPICES_VAL_RHONE, CH_SUD_SAUVAGE),
    _md("10000004301", "Lachenal", "Baptiste", "ONCOLOGY", _SALARIED, CHU_BELLEDONNE),
    _md("10000004401", "Rondepierre", "Anaïs", "ONCOLOGY", _SALARIED, HOSPICES_VAL_RHONE),
    # Nurses (liberal nurses are conventioned in sector 1), then the other professions.
    _other("10000004501", "Genthon", "Sylvie", "NURSE", _S1, CH_FOREZ_FURANE),
    _other("10000004601", "Ferrand-Mollard", "Yoann", "NURSE", _SALARIED, H_CHARTREUSE),
    _other("10000004701", "Bruyas", "Céline", "NURSE", _S1, CH_DOMBES),
    _other("10000004801", "Maisonneuve", "Cédric", "NURSE", _SALARIED, CH_BAUGES),
    _other("10000004901", "Chirat", "Valérie", "NURSE", _S1, H_MONTS_OR),
    _other("10000005001", "Grondin-Técher", "Mélissa", "NURSE", _S1, CH_SUD_SAUVAGE),
    _other("10000005101", "Coupat", "Bérénice", "PHARMACIST", _SALARIED, HL_VIVARAIS),
    _other("10000005201", "Valla", "Justine", "MIDWIFE", _S1, CH_COLLINES),
    _other("10000005301", "Guichard", "Florent", "DENTIST", _S1, H_MONTS_OR),
    _other("10000005401", "Venet", "Arthur", "PHYSIOTHERAPIST", _S1, HI_LEMAN),
)

# --- Expertise offers -------------------------------------------------------------------------------------

DEMO_EXPERTISE_OFFERS: tuple[DemoExpertiseOffer, ...] = (
    DemoExpertiseOffer(
        "derm-ght-loire",
        "Téléexpertise dermatologie — GHT Forez-Vivarais",
        "SPECIALTY_DERMATOLOGY",
        GHT_LOIRE,
        None,
        ("10000002001",),
        "10000002101",
    ),
    DemoExpertiseOffer(
        "derm-region-84",
        "Téléexpertise dermatologie — Auvergne-Rhône-Alpes",
        "SPECIALTY_DERMATOLOGY",
        None,
        "84",
        ("10000002101", "10000002201"),
        "10000002001",
    ),
    DemoExpertiseOffer(
        "cardio-ght-alpes-dauphine",
        "Téléexpertise cardiologie — GHT Dauphiné-Belledonne",
        "SPECIALTY_CARDIOLOGY",
        GHT_ALPES_DAUPHINE,
        None,
        ("10000001701",),
        "10000001801",
    ),
    DemoExpertiseOffer(
        "cardio-region-84",
        "Téléexpertise cardiologie — Auvergne-Rhône-Alpes",
        "SPECIALTY_CARDIOLOGY",
        None,
        "84",
        ("10000001801", "10000001901"),
        "10000001701",
    ),
    DemoExpertiseOffer(
        "psy-ght-val-rhone",
        "Téléexpertise psychiatrie — GHT Val de Rhône",
        "SPECIALTY_PSYCHIATRY",
        GHT_VAL_RHONE,
        None,
        ("10000002301",),
        "10000002401",
    ),
    DemoExpertiseOffer(
        "psy-region-84",
        "Téléexpertise psychiatrie — Auvergne-Rhône-Alpes",
        "SPECIALTY_PSYCHIATRY",
        None,
        "84",
        ("10000002401", "10000002501"),
        "10000002301",
    ),
    # No backup: the region's two endocrinologists are both in the pool (the backup is optional in the API).
    DemoExpertiseOffer(
        "endo-region-84",
        "Téléexpertise endocrinologie — Auvergne-Rhône-Alpes",
        "SPECIALTY_ENDOCRINOLOGY",
        None,
        "84",
        ("10000002601", "10000002701"),
        None,
    ),
    DemoExpertiseOffer(
        "geria-ght-loire",
        "Téléexpertise gériatrie — GHT Forez-Vivarais",
        "SPECIALTY_GERIATRICS",
        GHT_LOIRE,
        None,
        ("10000002801",),
        "10000003001",
    ),
    DemoExpertiseOffer(
        "geria-region-84",
        "Téléexpertise gériatrie — Auvergne-Rhône-Alpes",
        "SPECIALTY_GERIATRICS",
        None,
        "84",
        ("10000002901", "10000003001"),
        "10000002801",
    ),
)

# --- Patients ----------------------------------------------------------------------------------------------


def demo_patient_id(index: int) -> uuid.UUID:
    """The opaque id of the demo patient number `index` (stable across environments, unrelated to the INS)."""
    return uuid.uuid5(DEMO_PATIENT_NAMESPACE, f"demo-patient-{index}")


def _test_nir(sex: str, birth: date, birth_place_code: str, order: str) -> str:
    """A test NIR: sex digit, birth year and month, birth place (département + commune), order, key."""
    sex_digit = "1" if sex == "SEX_MALE" else "2"
    first13 = sex_digit + f"{birth.year % 100:02d}{birth.month:02d}" + birth_place_code + order
    return first13 + nir_key(first13)


def _patient(
    index: int,
    family: str,
    given: str,
    birth: date,
    sex: str,
    birth_place_code: str,
    order: str,
    status: str,
    *local_ids: tuple[str, str],
) -> DemoPatient:
    return DemoPatient(
        patient_id=demo_patient_id(index),
        matricule=_test_nir(sex, birth, birth_place_code, order),
        oid=TEST_NIR_OID,
        birth_family_name=family,
        birth_given_names=given,
        birth_date=birth,
        sex=sex,
        birth_place_code=birth_place_code,
        identity_status="IDENTITY_STATUS_" + status,
        local_identifiers=tuple(DemoLocalIdentifier(finess, ipp) for finess, ipp in local_ids),
    )


# Traits are written as INSi returns them: upper case, given names separated by spaces.
DEMO_PATIENTS: tuple[DemoPatient, ...] = (
    _patient(
        1,
        "CHAVANOL",
        "JEANNE MARIE",
        date(1948, 3, 14),
        "SEX_FEMALE",
        "42218",
        "001",
        "QUALIFIED",
        (CH_FOREZ, "FOR-0001012"),
        (HG_PILAT, "PIL-88123"),
    ),
    _patient(
        2,
        "BOURRATIER",
        "LOUIS ANDRE",
        date(1956, 11, 2),
        "SEX_MALE",
        "69387",
        "014",
        "QUALIFIED",
        (HOSPICES_VAL_RHONE, "HVR-2024-0042"),
    ),
    # Born in Ajaccio (2A): the key is computed with 19 in place of 2A.
    _patient(
        3,
        "SANTUCCI-ALBERTI",
        "MARIE FRANCOISE",
        date(1984, 7, 21),
        "SEX_FEMALE",
        "2A004",
        "023",
        "VALIDATED",
        (CHU_BELLEDONNE, "DB-077120"),
    ),
    # Born in Bastia (2B): the key is computed with 18 in place of 2B.
    _patient(
        4,
        "PIETRANERA",
        "ANTOINE",
        date(1991, 2, 9),
        "SEX_MALE",
        "2B033",
        "117",
        "PROVISIONAL",
        (H_MONTS_OR, "MO-55012"),
    ),
    # Born in Saint-Denis de La Réunion: département 974, commune 11.
    _patient(
        5,
        "TECHERAN",
        "JEAN BERNARD",
        date(1967, 9, 30),
        "SEX_MALE",
        "97411",
        "087",
        "QUALIFIED",
        (CH_SUD_SAUVAGE, "SUD-004512"),
    ),
    _patient(
        6,
        "VERNAYSSE",
        "EMMA LOU",
        date(2016, 5, 12),
        "SEX_FEMALE",
        "38185",
        "120",
        "QUALIFIED",
        (CHU_BELLEDONNE, "DB-164410"),
        (H_CHARTREUSE, "CHV-20160512"),
    ),
    # Born abroad (99 + INSEE country code 350, Morocco).
    _patient(
        7,
        "BENSALEMI",
        "YOUSSEF",
        date(1979, 12, 1),
        "SEX_MALE",
        "99350",
        "031",
        "VALIDATED",
        (CH_FOREZ_FURANE, "FUR-7791"),
    ),
    _patient(
        8,
        "COLLOMBAT",
        "SUZANNE PAULETTE",
        date(1938, 6, 25),
        "SEX_FEMALE",
        "73065",
        "007",
        "RETRIEVED",
        (CH_BAUGES, "BAU-1938-0625"),
        (CHU_BELLEDONNE, "DB-003391"),
    ),
)
