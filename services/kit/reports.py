"""Activity reports: who sees which rows, the months asked, the rows' keyset. Shared by scheduling, expertise
and billing (each reports its own activity with its own SQL).

Scope (checked before anything is read): an ARS officer sees their region (their token's region claim),
whatever certificate they call through; a hub operator, or a hub component acting for itself, sees
everything (`Principal.unrestricted`: never a component acting for a token's person or a named caller); an
establishment (any token through its certificate, or a component naming it as the caller it acts for) sees
its GHT, or only itself when outside any GHT. Asking for another region or GHT than one's own is
REPORT_SCOPE_NOT_VISIBLE. Rows carry counts, durations and amounts only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from google.type import date_pb2  # type: ignore[import-untyped]
from parcours.options.v1 import options_pb2

from services.kit.auth import Principal
from services.kit.errors import PermissionDenied


@dataclass(frozen=True)
class Scope:
    """None everywhere: everything; else a region, a GHT, or one establishment outside any GHT."""

    region_code: str | None = None
    ght_id: str | None = None
    finess: str | None = None


def _refused() -> PermissionDenied:
    return PermissionDenied(
        "REPORT_SCOPE_NOT_VISIBLE", "the caller sees the activity of their own region or GHT only"
    )


def scope_of(principal: Principal, ght_of_caller: str | None, region: str | None, ght: str | None) -> Scope:
    """The caller's scope; `region`/`ght` are the filters asked (ids, None when not given). `ght_of_caller`:
    the GHT of the caller's establishment (None outside any GHT)."""
    if principal.has_any([options_pb2.ROLE_ARS_OFFICER]):
        if principal.region is None or (region is not None and region != principal.region):
            raise _refused()
        return Scope(region_code=principal.region)
    if principal.unrestricted:
        return Scope()
    if principal.establishment:
        finess = principal.establishment.removeprefix("establishments/")
        if ght_of_caller is None:
            if ght is not None:
                raise _refused()
            return Scope(finess=finess)
        if ght is not None and ght != ght_of_caller:
            raise _refused()
        return Scope(ght_id=ght_of_caller)
    raise _refused()


def first_day(month: date_pb2.Date) -> date:
    return date(month.year, month.month, 1)


def month_message(value: date) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=0)


def rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def key_token(month: date, region: str, ght: str, specialty: str) -> str:
    return "|".join((month.isoformat(), region, ght, specialty))


def parse_key(key: str | None) -> tuple[date, str, str, str] | None:
    """The keyset position of a page token (written by this service: signed, so well formed)."""
    if key is None:
        return None
    month, region, ght, specialty = key.split("|")
    return date.fromisoformat(month), region, ght, specialty
