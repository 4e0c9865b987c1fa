"""The civil time zone of each ARS region: a DROM's own (none of them with daylight saving), else
Europe/Paris (metropolitan regions, Corse included). Local months and dates of acts are read in it (§7.14)."""

from __future__ import annotations

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
