"""The civil time zone of each ARS region: a DROM's own (none of them with daylight saving), else
Europe/Paris (metropolitan regions, Corse included). Local months and dates of acts are read in it (§7.14)."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

METROPOLITAN_ZONE = "Europe/Paris"
# INSEE region code → IANA zone (the same list as the directory's regions).
REGION_ZONE_NAMES: dict[str, str] = {
    "01": "America/Guadeloupe",
    "02": "America/Martinique",
    "03": "America/Cayenne",
    "04": "Indian/Reunion",
    "06": "Indian/Mayotte",
}


def region_zone_name(region: str) -> str:
    return REGION_ZONE_NAMES.get(region, METROPOLITAN_ZONE)


def region_zone(region: str) -> ZoneInfo:
    return ZoneInfo(region_zone_name(region))


def local_date(instant: datetime, region: str) -> date:
    """The civil date of `instant` where the act took place: in its region's zone (§7.14). `region` is the
    code (`84`) or the resource name (`regions/84`)."""
    if instant.tzinfo is None:
        raise ValueError("the instant must be timezone-aware")
    return instant.astimezone(region_zone(region.removeprefix("regions/"))).date()


def age_on(birth: date, day: date) -> int:
    """A person's age in whole years on `day` (the birthday counts from its own date)."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))
