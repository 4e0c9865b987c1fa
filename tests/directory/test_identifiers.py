"""The directory's identifier checks: NIR/NIA format and key, NIR ↔ strict traits (§7.5, in Python and in the
database's constraints, compared on the same cases), RPPS and FINESS; and CreatePatient / UpdatePatient over
real gRPC refusing, or flagging when provisional, a NIR that contradicts its identity."""

from __future__ import annotations

import secrets
from datetime import date

import asyncpg
import grpc
import pytest
from google.type import date_pb2
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc

from services.directory.demo import DEMO_PATIENTS
from services.directory.identifiers import (
    TraitMismatch,
    check_nir_traits,
    finess_violations,
    national_id,
    nir_key,
    nir_trait_mismatches,
    nir_violations,
    rpps_violations,
)
from services.kit.errors import InvalidArgument
from services.kit.pki import DevPki
from tests.conftest import Minter
from tests.support import LOIRE, bearer, establishment_channel, request_id
from tests.support.calls import call, details


def key_of(digits13: str) -> str:
    """The NIR key computed here independently of the code under test (97 − number mod 97)."""
    return f"{97 - int(digits13) % 97:02d}"


def nir(first13: str, digits_for_key: str | None = None) -> str:
    return first13 + key_of(digits_for_key or first13)


METROPOLITAN = nir("1850578006084")
CORSICA_2A = nir("284072A004023", "2840719004023")
CORSICA_2B = nir("191022B033117", "1910218033117")
# A classic mistake: reading 2A as 20 (the pre-1976 Corsica code) instead of 19 when computing the key.
CORSICA_2A_UNSUBSTITUTED = nir("284072A004023", "2840720004023")
OVERSEAS_974 = nir("1670997411087")
BORN_ABROAD = nir("1791299350031")


@pytest.mark.parametrize(
    "matricule",
    [
        pytest.param(METROPOLITAN, id="metropolitan"),
        pytest.param(CORSICA_2A, id="corsica-2A-counts-as-19"),
        pytest.param(CORSICA_2B, id="corsica-2B-counts-as-18"),
        pytest.param(OVERSEAS_974, id="overseas-974-commune-2-digits"),
        pytest.param(BORN_ABROAD, id="born-abroad-99"),
        pytest.param(nir("2842569123045"), id="month-25-incomplete-civil-record"),
        pytest.param(nir("1846269123045"), id="month-62-incomplete-civil-record"),
        pytest.param(nir("7850578006084"), id="nia-sex-7"),
        pytest.param(nir("8850578006084"), id="nia-sex-8"),
        pytest.param(nir("3850578006084"), id="sex-3-admitted-by-the-api"),
    ],
)
def test_valid_nir(matricule: str) -> None:
    assert nir_violations(matricule, "ins.matricule") == []


@pytest.mark.parametrize(
    ("matricule", "fragment"),
    [
        pytest.param(METROPOLITAN[:13] + "00", "does not match", id="wrong-key"),
        pytest.param(CORSICA_2A_UNSUBSTITUTED, "does not match", id="corsica-key-without-substitution"),
        pytest.param(METROPOLITAN[:14], "15 characters", id="too-short"),
        pytest.param(METROPOLITAN + "0", "15 characters", id="too-long"),
        pytest.param("", "15 characters", id="empty"),
        pytest.param("18505780O608436", "digits", id="letter-O-in-commune"),
        pytest.param("1X50578006084" + "36", "digits", id="letter-in-year"),
        pytest.param(nir("1851378006084"), "month 13", id="month-13"),
        pytest.param(nir("1850078006084"), "month 00", id="month-00"),
        pytest.param(nir("1854578006084"), "month 45", id="month-45"),
        pytest.param(nir("0850578006084"), "sex digit", id="sex-0"),
        pytest.param(nir("5850578006084"), "sex digit", id="sex-5"),
        pytest.param(nir("1850500006084"), "00", id="departement-00"),
        pytest.param("185052C00608412", "2C", id="departement-2C"),
        pytest.param("1٨٥٠٥٧٨٠٠٦٠٨٤٣٦", "digits", id="non-ascii-digits"),
    ],
)
def test_invalid_nir(matricule: str, fragment: str) -> None:
    violations = nir_violations(matricule, "ins.matricule")
    assert len(violations) == 1
    assert violations[0].field == "ins.matricule"
    assert fragment in violations[0].description


def test_wrong_key_description_gives_the_expected_key() -> None:
    expected = key_of(METROPOLITAN[:13])
    wrong = "12" if expected != "12" else "13"
    [violation] = nir_violations(METROPOLITAN[:13] + wrong, "matricule")
    assert violation.description == f"key {wrong} does not match the NIR (expected {expected})"


def test_nir_key_substitutes_corsica() -> None:
    assert nir_key("284072A004023") == key_of("2840719004023")
    assert nir_key("191022B033117") == key_of("1910218033117")
    assert nir_key("1850578006084") == key_of("1850578006084")


def test_nir_key_is_two_digits() -> None:
    # 97 - (n mod 97) is between 01 and 97: a one-digit key is written with a leading zero.
    first13 = next(f"{n:013d}" for n in range(1850578006000, 1850578007000) if 97 - n % 97 < 10)
    key = nir_key(first13)
    assert len(key) == 2
    assert key.startswith("0")


@pytest.mark.parametrize("first13", ["185057800608", "18505780060845", "1850578O06084"])
def test_nir_key_refuses_malformed_input(first13: str) -> None:
    with pytest.raises(ValueError, match=r"13 characters|digits"):
        nir_key(first13)


@pytest.mark.parametrize("rpps", ["10000000101", "10101234567", "00000000000"])
def test_valid_rpps(rpps: str) -> None:
    assert rpps_violations(rpps, "practitioner.rpps") == []


@pytest.mark.parametrize(
    ("rpps", "fragment"),
    [
        pytest.param("1000000010", "11 digits", id="10-digits"),
        pytest.param("100000001011", "11 digits", id="12-digits"),
        pytest.param("1000000010A", "digits only", id="letter"),
        pytest.param("1000 000010", "digits only", id="space"),
        pytest.param("", "11 digits", id="empty"),
    ],
)
def test_invalid_rpps(rpps: str, fragment: str) -> None:
    [violation] = rpps_violations(rpps, "practitioner.rpps")
    assert violation.field == "practitioner.rpps"
    assert fragment in violation.description


@pytest.mark.parametrize("finess", ["429990001", "2A0000018", "2B0000018", "974990001", "010000024"])
def test_valid_finess(finess: str) -> None:
    assert finess_violations(finess, "establishment.finess") == []


@pytest.mark.parametrize(
    ("finess", "fragment"),
    [
        pytest.param("42999000", "9 characters", id="8-chars"),
        pytest.param("4299900011", "9 characters", id="10-chars"),
        pytest.param("2C0000018", "département", id="corsica-2C"),
        pytest.param("AB0000018", "département", id="letters-prefix"),
        pytest.param("000000018", "département", id="departement-00"),
        pytest.param("42999000A", "digits", id="letter-in-tail"),
    ],
)
def test_invalid_finess(finess: str, fragment: str) -> None:
    [violation] = finess_violations(finess, "establishment.finess")
    assert violation.field == "establishment.finess"
    assert fragment in violation.description


def test_national_id_prefixes_rpps_with_8() -> None:
    assert national_id("10000000101") == "810000000101"


# --- NIR ↔ strict traits (§7.5) ----------------------------------------------------------------------------

FEMALE, MALE = "SEX_FEMALE", "SEX_MALE"
MARCH_1985 = date(1985, 3, 2)
NOVEMBER_1977 = date(1977, 11, 5)


def first13(sex: str, year: int, month: int, place: str, order: str = "023") -> str:
    return f"{sex}{year % 100:02d}{month:02d}{place}{order}"


# (id, matricule's first 13 characters, sex, birth date, birth place code, the traits it contradicts)
TRAIT_CASES = [
    ("agrees", first13("2", 1985, 3, "42218"), FEMALE, MARCH_1985, "42218", set()),
    ("sex", first13("1", 1985, 3, "42218"), FEMALE, MARCH_1985, "42218", {"sex"}),
    ("birth-year", first13("2", 1984, 3, "42218"), FEMALE, MARCH_1985, "42218", {"birth_year"}),
    ("birth-year-of-another-century", first13("2", 1885, 3, "42218"), FEMALE, MARCH_1985, "42218", set()),
    ("birth-month", first13("2", 1985, 4, "42218"), FEMALE, MARCH_1985, "42218", {"birth_month"}),
    ("month-25-incomplete-civil-record", first13("2", 1985, 25, "42218"), FEMALE, MARCH_1985, "42218", set()),
    ("month-62-incomplete-civil-record", first13("2", 1985, 62, "42218"), FEMALE, MARCH_1985, "42218", set()),
    ("departement", first13("2", 1985, 3, "69123"), FEMALE, MARCH_1985, "42218", {"birth_place"}),
    ("born-abroad", first13("1", 1985, 3, "99352"), MALE, MARCH_1985, "99352", set()),
    (
        "nir-abroad-place-in-france",
        first13("1", 1985, 3, "99352"),
        MALE,
        MARCH_1985,
        "42218",
        {"birth_place"},
    ),
    (
        "place-abroad-nir-in-france",
        first13("1", 1985, 3, "42218"),
        MALE,
        MARCH_1985,
        "99352",
        {"birth_place"},
    ),
    ("reunion-974-commune-2-digits", first13("1", 1985, 3, "97411"), MALE, MARCH_1985, "97411", set()),
    ("guadeloupe-is-not-reunion", first13("1", 1985, 3, "97111"), MALE, MARCH_1985, "97411", {"birth_place"}),
    ("ajaccio-2A", first13("2", 1985, 3, "2A004"), FEMALE, MARCH_1985, "2A004", set()),
    ("2A-is-not-2B", first13("2", 1985, 3, "2A004"), FEMALE, MARCH_1985, "2B033", {"birth_place"}),
    ("corsica-20-before-1976", first13("2", 1970, 3, "20004"), FEMALE, date(1970, 3, 2), "2A004", set()),
    (
        "corsica-20-after-1976",
        first13("2", 1980, 3, "20004"),
        FEMALE,
        date(1980, 3, 2),
        "2A004",
        {"birth_place"},
    ),
    ("seine-75-before-1968", first13("1", 1960, 3, "75012"), MALE, date(1960, 3, 2), "92012", set()),
    ("seine-75-after-1968", first13("1", 1970, 3, "75012"), MALE, date(1970, 3, 2), "92012", {"birth_place"}),
    ("algeria-91-before-1963", first13("1", 1958, 3, "91352"), MALE, date(1958, 3, 2), "99352", set()),
    (
        "essonne-91-is-not-abroad-later",
        first13("1", 1970, 3, "91352"),
        MALE,
        date(1970, 3, 2),
        "99352",
        {"birth_place"},
    ),
    ("morocco-95-before-1957", first13("2", 1950, 3, "95350"), FEMALE, date(1950, 3, 2), "99350", set()),
    ("nia-sex-digit-not-checked", first13("8", 1985, 3, "99352"), MALE, MARCH_1985, "99352", set()),
    (
        "every-trait",
        first13("1", 1984, 4, "69123"),
        FEMALE,
        MARCH_1985,
        "42218",
        {"sex", "birth_year", "birth_month", "birth_place"},
    ),
]


@pytest.mark.parametrize(
    ("first", "sex", "born", "place", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in TRAIT_CASES],
)
def test_nir_trait_mismatches_name_each_contradicted_trait(
    first: str, sex: str, born: date, place: str, expected: set[str]
) -> None:
    matricule = first + nir_key(first)
    found = nir_trait_mismatches(matricule, sex=sex, birth_date=born, birth_place_code=place)
    assert {m.trait for m in found} == expected
    fields = {"sex": "ins.sex", "birth_year": "ins.birth_date", "birth_month": "ins.birth_date"}
    assert all(m.field == fields.get(m.trait, "ins.birth_place_code") for m in found)
    # What a client and the logs read names the trait, never the identity's values.
    assert all(first[5:10] not in m.description and matricule not in m.description for m in found)


@pytest.mark.parametrize(
    ("first", "sex", "born", "place", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in TRAIT_CASES],
)
async def test_the_database_constraints_hold_the_same_rule(
    pool: asyncpg.Pool, first: str, sex: str, born: date, place: str, expected: set[str]
) -> None:
    matricule = first + nir_key(first)
    row = await pool.fetchrow(
        "SELECT directory.nir_sex_agrees($1, $2) AS sex,"
        " directory.nir_birth_year_agrees($1, $3) AS birth_year,"
        " directory.nir_birth_month_agrees($1, $3) AS birth_month,"
        " directory.nir_birth_place_agrees($1, $4, $3) AS birth_place",
        matricule,
        sex,
        born,
        place,
    )
    assert {trait for trait, agrees in row.items() if not agrees} == expected


def test_a_provisional_identity_is_flagged_and_any_other_refused() -> None:
    found = [TraitMismatch("sex", "ins.sex", "the NIR's sex digit does not match")]
    assert check_nir_traits(found, provisional=True) == found
    assert check_nir_traits([], provisional=False) == []
    with pytest.raises(InvalidArgument) as refused:
        check_nir_traits(found, provisional=False)
    assert refused.value.reason == "NIR_TRAITS_MISMATCH"
    assert refused.value.metadata == {"traits": "sex"}
    assert [v.field for v in refused.value.violations] == ["ins.sex"]


def test_every_demo_identity_agrees_with_its_nir() -> None:
    for patient in DEMO_PATIENTS:
        found = nir_trait_mismatches(
            patient.matricule,
            sex=patient.sex,
            birth_date=patient.birth_date,
            birth_place_code=patient.birth_place_code,
        )
        assert found == [], patient.patient_id


def _identity(first: str, sex: int, born: date, place: str) -> directory_pb2.InsIdentityInput:
    return directory_pb2.InsIdentityInput(
        matricule=first + nir_key(first),
        oid="1.2.250.1.213.1.4.10",
        birth_family_name="ESSAI",
        birth_given_names="CLAIRE",
        birth_date=date_pb2.Date(year=born.year, month=born.month, day=born.day),
        sex=sex,
        birth_place_code=place,
    )


def _unique_order() -> str:
    # Other tests make NIRs of women born in March 1985 at 42218: these use other months and communes.
    return f"{secrets.randbelow(1000):03d}"


async def test_create_patient_refuses_a_nir_contradicting_a_qualified_identity(
    pki: DevPki, directory_address: str, mint: Minter, pool: asyncpg.Pool
) -> None:
    stub = directory_pb2_grpc.DirectoryServiceStub(establishment_channel(pki, directory_address, LOIRE))
    # A man's NIR born in December, given with a woman's identity born in November.
    first = first13("1", 1977, 12, "42187", _unique_order())
    ins = _identity(first, directory_pb2.SEX_FEMALE, date(1977, 11, 5), "42187")
    error = await call(
        stub.CreatePatient(
            directory_pb2.CreatePatientRequest(
                request_id=request_id(), ins=ins, identity_status=directory_pb2.IDENTITY_STATUS_QUALIFIED
            ),
            metadata=bearer(mint(rpps="10000000101")),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = details(error)
    assert info is not None and info.reason == "NIR_TRAITS_MISMATCH"
    assert info.metadata["traits"] == "sex,birth_month"
    assert [field for field, _ in violations] == ["ins.sex", "ins.birth_date"]
    assert ins.matricule not in (error.details() or "")
    stored = await pool.fetchval(
        "SELECT count(*) FROM directory.patients WHERE matricule = $1", ins.matricule
    )
    assert stored == 0


async def test_a_provisional_identity_is_kept_with_a_warning_and_cannot_be_promoted_until_corrected(
    pki: DevPki, directory_address: str, mint: Minter
) -> None:
    stub = directory_pb2_grpc.DirectoryServiceStub(establishment_channel(pki, directory_address, LOIRE))
    me = bearer(mint(rpps="10000000101"))

    async def create(ins: directory_pb2.InsIdentityInput) -> directory_pb2.CreatePatientResponse:
        return await stub.CreatePatient(  # type: ignore[no-any-return]
            directory_pb2.CreatePatientRequest(
                request_id=request_id(),
                ins=ins,
                identity_status=directory_pb2.IDENTITY_STATUS_PROVISIONAL,
                local_identifier=directory_pb2.LocalIdentifier(
                    establishment=f"establishments/{LOIRE}", ipp=f"NIR-{request_id()[:8]}"
                ),
            ),
            metadata=me,
        )

    # Born in Lyon (69) according to the NIR, in Saint-Étienne (42) according to the identity.
    flagged = await create(
        _identity(
            first13("2", 1977, 11, "69187", _unique_order()), directory_pb2.SEX_FEMALE, NOVEMBER_1977, "42187"
        )
    )
    assert flagged.patient.identity_status == directory_pb2.IDENTITY_STATUS_PROVISIONAL
    assert [(w.reason, w.trait, w.field) for w in flagged.warnings] == [
        ("NIR_TRAITS_MISMATCH", "birth_place", "ins.birth_place_code")
    ]
    error = await call(
        stub.UpdatePatient(
            directory_pb2.UpdatePatientRequest(
                request_id=request_id(),
                name=flagged.patient.name,
                identity_status=directory_pb2.IDENTITY_STATUS_VALIDATED,
            ),
            metadata=me,
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = details(error)
    assert info is not None and (info.reason, info.metadata["traits"]) == (
        "NIR_TRAITS_MISMATCH",
        "birth_place",
    )
    still = await stub.GetPatient(directory_pb2.GetPatientRequest(name=flagged.patient.name), metadata=me)
    assert still.patient.identity_status == directory_pb2.IDENTITY_STATUS_PROVISIONAL

    # A provisional identity whose NIR agrees carries no warning and is promoted.
    sound = await create(
        _identity(
            first13("2", 1977, 11, "42187", _unique_order()), directory_pb2.SEX_FEMALE, NOVEMBER_1977, "42187"
        )
    )
    assert list(sound.warnings) == []
    promoted = await stub.UpdatePatient(
        directory_pb2.UpdatePatientRequest(
            request_id=request_id(),
            name=sound.patient.name,
            identity_status=directory_pb2.IDENTITY_STATUS_VALIDATED,
        ),
        metadata=me,
    )
    assert promoted.patient.identity_status == directory_pb2.IDENTITY_STATUS_VALIDATED
