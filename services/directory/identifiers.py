"""Checks of the French identifiers the directory stores: NIR/NIA (INS matricule), RPPS and FINESS.

Each check returns the field violations of one value (empty when valid) so that a servicer can gather every
bad field of a request into one INVALID_ARGUMENT; none of them raises. Descriptions name the part that fails
but never echo the whole value back, since a matricule is patient data that must stay out of logs and errors.
"""

from __future__ import annotations

import re

from services.kit.errors import FieldViolation

NIR_LENGTH = 15
RPPS_LENGTH = 11
FINESS_LENGTH = 9

# 1/2: NIR (male/female); 7/8: NIA, the temporary numbers given while a civil record is checked; 3: admitted
# because the API contract (InsIdentityInput.matricule) admits it, though no source at hand confirms its use.
_SEX_DIGITS = frozenset("12378")
# Corsica's départements are written 2A/2B in the NIR but count as 19/18 in the key (domain doc §4.2).
_CORSICA_KEY_SUBSTITUTES = {"2A": "19", "2B": "18"}
_DEPARTEMENT = re.compile(r"(?:[0-9]{2}|2[AB])")
# ASCII digits only: str.isdecimal() would also accept other scripts' digits.
_DIGITS = re.compile(r"[0-9]+")


def _digits(text: str) -> bool:
    return _DIGITS.fullmatch(text) is not None


def _month_ok(month: int) -> bool:
    # 01-12 for a known birth month; 20-42 and 50-99 are fictitious months given when the civil record is
    # incomplete (the month is unknown or the person was registered without a birth certificate).
    return 1 <= month <= 12 or 20 <= month <= 42 or 50 <= month <= 99


def nir_key(first13: str) -> str:
    """The 2-digit key of a NIR/NIA from its first 13 characters: 97 − (number mod 97), 2A→19, 2B→18 first."""
    if len(first13) != NIR_LENGTH - 2:
        raise ValueError(f"a NIR without its key has {NIR_LENGTH - 2} characters, got {len(first13)}")
    departement = first13[5:7]
    digits = first13[:5] + _CORSICA_KEY_SUBSTITUTES.get(departement, departement) + first13[7:]
    if not _digits(digits):
        raise ValueError("a NIR is made of digits, with 2A or 2B as département for Corsica")
    return f"{97 - int(digits) % 97:02d}"


def nir_violations(matricule: str, field: str) -> list[FieldViolation]:
    """Why `matricule` is not a well-formed NIR or NIA with a matching key (empty list when it is).

    Layout: sex (1), birth year (2), birth month (2), département (2, or 3 for 97x/98x overseas), commune
    (3, or 2 overseas), order number (3), key (2).
    """

    def bad(description: str) -> list[FieldViolation]:
        return [FieldViolation(field, description)]

    if len(matricule) != NIR_LENGTH:
        return bad(f"a NIR has {NIR_LENGTH} characters, got {len(matricule)}")
    sex, year, month, departement, rest, key = (
        matricule[0],
        matricule[1:3],
        matricule[3:5],
        matricule[5:7],
        matricule[7:13],
        matricule[13:15],
    )
    if sex not in _SEX_DIGITS:
        return bad(f"sex digit {sex!r} is not 1 or 2 (NIR), 7 or 8 (NIA) or 3")
    if not _digits(year + month):
        return bad("birth year and month must be digits")
    if not _month_ok(int(month)):
        return bad(f"birth month {month} is not 01-12, 20-42 or 50-99")
    if _DEPARTEMENT.fullmatch(departement) is None:
        return bad(f"département {departement!r} is not 2 digits, 2A or 2B")
    if departement == "00":
        return bad("département 00 does not exist")
    if not _digits(rest + key):
        return bad("commune, order number and key must be digits")
    expected = nir_key(matricule[:13])
    if key != expected:
        return bad(f"key {key} does not match the NIR (expected {expected})")
    return []


def rpps_violations(rpps: str, field: str) -> list[FieldViolation]:
    """Why `rpps` is not an 11-digit RPPS number (empty list when it is).

    The last digit is often said to be a Luhn check digit, but only third-party code claims so (domain doc
    §4.2: unconfirmed), so it is not enforced: rejecting a real practitioner would be worse than accepting a
    typo that the national directory lookup would catch anyway.
    """
    if len(rpps) != RPPS_LENGTH:
        return [FieldViolation(field, f"an RPPS number has {RPPS_LENGTH} digits, got {len(rpps)} characters")]
    if not _digits(rpps):
        return [FieldViolation(field, "an RPPS number is made of digits only")]
    return []


def finess_violations(finess: str, field: str) -> list[FieldViolation]:
    """Why `finess` is not a well-formed FINESS number (empty list when it is).

    Two characters of département (2A/2B for Corsica, 97 for overseas) then 7 digits. The check character's
    algorithm is unconfirmed (domain doc §4.2: Luhn is often assumed), so it is not enforced.
    """
    if len(finess) != FINESS_LENGTH:
        return [FieldViolation(field, f"a FINESS number has {FINESS_LENGTH} characters, got {len(finess)}")]
    departement, rest = finess[:2], finess[2:]
    if _DEPARTEMENT.fullmatch(departement) is None or departement == "00":
        return [FieldViolation(field, f"département {departement!r} is not 01-99, 2A or 2B")]
    if not _digits(rest):
        return [FieldViolation(field, "the 7 characters after the département must be digits")]
    return []


def national_id(rpps: str) -> str:
    """The national health-professional identifier (ANS PSIdNat) of an RPPS: "8" + RPPS."""
    return "8" + rpps
