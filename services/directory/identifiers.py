"""Checks of the French identifiers the directory stores: NIR/NIA (INS matricule), RPPS and FINESS.

Each check returns the field violations of one value (empty when valid) so that a servicer can gather every
bad field of a request into one INVALID_ARGUMENT; none of them raises. Descriptions name the part that fails
but never echo the whole value back, since a matricule is patient data that must stay out of logs and errors.

A NIR also says who it belongs to (§7.5 of the domain reference): its sex digit, birth year and month, and
département of birth must agree with the strict traits of the identity it is stored with.
`nir_trait_mismatches` names each trait that does not; `check_nir_traits` refuses the identity with
NIR_TRAITS_MISMATCH, or returns the mismatches as warnings when the identity is only provisional. The database
holds the same rule for every stored identity that is not provisional (directory migration 0003, constraints
`patients_nir_*_agrees`, mapped to the same reason by `NIR_TRAIT_CONSTRAINTS`), so that an identity flagged
while provisional cannot be promoted without its NIR or traits being corrected.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date

from services.kit.errors import DomainError, FailedPrecondition, FieldViolation, InvalidArgument

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


# --- NIR ↔ strict traits (§7.5) ----------------------------------------------------------------------------

NIR_TRAITS_MISMATCH = "NIR_TRAITS_MISMATCH"

# The traits a NIR carries, and the field of InsIdentityInput holding each.
TRAIT_FIELDS: Mapping[str, str] = {
    "sex": "sex",
    "birth_year": "birth_date",
    "birth_month": "birth_date",
    "birth_place": "birth_place_code",
}
_TRAIT_TEXT: Mapping[str, str] = {
    "sex": "the NIR's sex digit (1 male, 2 female) does not match the identity's sex",
    "birth_year": "the NIR's birth year (digits 2-3) does not match the year of the birth date",
    "birth_month": "the NIR's birth month (digits 4-5) does not match the month of the birth date",
    "birth_place": (
        "the NIR's département of birth (digits 6-7, 3 digits overseas, 99 abroad) does not match the "
        "birth place code"
    ),
}
# Sex digits whose meaning is sourced (§7.5): 1 male, 2 female. 3, 7 and 8 (NIA) are not checked.
_SEX_OF_DIGIT = {"1": "SEX_MALE", "2": "SEX_FEMALE"}
_OVERSEAS = frozenset({"97", "98"})


@dataclass(frozen=True)
class TraitMismatch:
    """A strict trait the NIR contradicts: which trait, the request field holding it, and why (no values)."""

    trait: str
    field: str
    description: str


def _departement(code: str) -> str:
    """The département of a NIR's birth place (from its 6th character) or of an INSEE birth place code."""
    return code[:3] if code[:2] in _OVERSEAS else code[:2]


def birth_place_agrees(nir_place: str, birth_place_code: str, birth_year: int) -> bool:
    """Whether the NIR's birth place (its characters 6-10) names the département of the birth place code.

    The NIR keeps the code in force at birth (service-public.fr F33078), so historical codes agree with
    today's: Corsica's 20 before 2A/2B (1976); Seine (75) and Seine-et-Oise (78) before their split into 75
    and 91-95 (1968); and, for births abroad (99), 91 to 94 for Algeria before 1963 and 95 (Morocco) or 96
    (Tunisia) before 1957.
    """
    nir, born = _departement(nir_place), _departement(birth_place_code)
    if nir == born:
        return True
    if nir == "20" and born in ("2A", "2B"):
        return birth_year < 1976
    if nir in ("75", "78") and born in ("75", "78", "91", "92", "93", "94", "95"):
        return birth_year < 1968
    if born == "99" and nir in ("91", "92", "93", "94"):
        return birth_year < 1963
    if born == "99" and nir in ("95", "96"):
        return birth_year < 1957
    return False


def nir_trait_mismatches(
    matricule: str, *, sex: str, birth_date: date, birth_place_code: str, prefix: str = "ins."
) -> list[TraitMismatch]:
    """The strict traits a well-formed NIR/NIA contradicts (§7.5); empty when they agree.

    `sex` is a parcours.directory.v1.Sex NAME. A birth month of 20-42 or 50-99 (incomplete civil record) says
    nothing about the month; sex digits other than 1 and 2 say nothing about the sex.
    """
    found: list[str] = []
    expected_sex = _SEX_OF_DIGIT.get(matricule[0])
    if expected_sex is not None and expected_sex != sex:
        found.append("sex")
    if matricule[1:3] != f"{birth_date.year % 100:02d}":
        found.append("birth_year")
    month = int(matricule[3:5])
    if 1 <= month <= 12 and month != birth_date.month:
        found.append("birth_month")
    if not birth_place_agrees(matricule[5:10], birth_place_code, birth_date.year):
        found.append("birth_place")
    return [TraitMismatch(t, prefix + TRAIT_FIELDS[t], _TRAIT_TEXT[t]) for t in found]


def check_nir_traits(mismatches: list[TraitMismatch], *, provisional: bool) -> list[TraitMismatch]:
    """Refuse an identity whose NIR contradicts its traits, or return the mismatches as warnings when the
    identity is only provisional (RNIV: a provisional identity is still being checked).

    The refusal is INVALID_ARGUMENT with reason NIR_TRAITS_MISMATCH, a field violation per trait and the
    traits named in the ErrorInfo metadata (`traits`: comma-separated).
    """
    if not mismatches or provisional:
        return mismatches
    error = InvalidArgument(
        [FieldViolation(m.field, m.description) for m in mismatches], reason=NIR_TRAITS_MISMATCH
    )
    error.metadata["traits"] = ",".join(m.trait for m in mismatches)
    raise error


def _stored_mismatch(trait: str) -> Callable[[], DomainError]:
    def refusal() -> DomainError:
        return FailedPrecondition(
            NIR_TRAITS_MISMATCH,
            f"{_TRAIT_TEXT[trait]}: only a provisional identity may be kept so (correct the NIR or the "
            "traits)",
            {"traits": trait},
        )

    return refusal


# The database's constraints holding the same rule for stored identities that are not provisional.
NIR_TRAIT_CONSTRAINTS: Mapping[str, Callable[[], DomainError]] = {
    f"patients_nir_{trait}_agrees": _stored_mismatch(trait) for trait in TRAIT_FIELDS
}
