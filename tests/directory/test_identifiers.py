from __future__ import annotations

import pytest

from services.directory.identifiers import (
    finess_violations,
    national_id,
    nir_key,
    nir_violations,
    rpps_violations,
)


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
