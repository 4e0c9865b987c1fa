"""The billing catalog: dated codes and parameters kept as versioned data (`ngap-telemedicine.toml`).

The data file is the source; a migration loads it into schema `billing` (one row set per version, the
`billing.catalogs` row naming the current one) and the service reads it from there. The loader is idempotent:
loading a version already loaded with the same content does nothing; loading a changed file whose version was
already loaded is refused (bump the version). Every catalog change ships with a migration calling
`load_migration` again (see migrations/0002.billing-catalog.py).

    python -m services.billing.catalog check          # parse and validate the data file
    python -m services.billing.catalog load           # load it (PARCOURS_DATABASE_URL)

`Catalog` is the in-memory form the rule engine reads: entries and parameters with their dates, amounts in
integer cents, enum values as proto enum NAMEs (`PROFESSION_PHYSICIAN`, `ACT_TYPE_TELEEXPERTISE`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from parcours.billing.v1 import billing_pb2
from parcours.type.v1 import practice_pb2

DATA_FILE = Path(__file__).resolve().parent / "ngap-telemedicine.toml"
CATALOG = "ngap-telemedicine"

# The values an entry may list as unconfirmed.
UNCONFIRMABLE_FIELDS = frozenset(
    {"amount", "overseas_amount", "code", "effective_from", "effective_to", "label"}
)
# Conditions a biller rule may carry, evaluated by the rule engine.
CONDITIONS = frozenset({"care_home_resident", "performer_is_physician"})
PARAMETER_KINDS = ("basis_points", "money", "count", "text")
# How a quota counts (parameter `quota.{quota}.key`): per billing professional or per patient, per calendar
# year or month of the act date.
QUOTA_KEYS = frozenset({"biller_patient_year", "patient_year", "biller_patient_month", "patient_month"})
# Text parameters that list values (comma-separated), and the values each may list: the rule engine compares
# them with the act, so a misspelt one would silently never match.
_SPECIALTIES = frozenset(
    name.removeprefix("SPECIALTY_")
    for name in practice_pb2.Specialty.keys()  # noqa: SIM118 (an EnumTypeWrapper)
    if name not in ("SPECIALTY_UNSPECIFIED", "SPECIALTY_NONE")
)
LIST_PARAMETERS: Mapping[str, frozenset[str]] = {
    "parcours.direct_access_specialties": _SPECIALTIES,
    "parcours.direct_access_by_age.specialties": _SPECIALTIES,
    "parcours.territoriality_exception_zones": frozenset({"UNDERSERVED", "ZIP"}),
    "remote_cap.counted_act_types": frozenset(
        name.removeprefix("ACT_TYPE_")
        for name in billing_pb2.ActType.keys()  # noqa: SIM118 (an EnumTypeWrapper)
        if name != "ACT_TYPE_UNSPECIFIED"
    ),
    "remote_cap.excluded": frozenset({"TREATING_PHYSICIAN_OWN_PATIENTS"}),
    "participation_forfaitaire.rate_classes": frozenset(),  # checked against the entries' rate classes
}


class CatalogError(ValueError):
    """The data file is malformed, or conflicts with what the database holds."""


@dataclass(frozen=True)
class BillerRule:
    """Who may bill an entry: a profession, optionally narrowed by specialty, sector and a condition."""

    profession: str
    specialties: frozenset[str] = frozenset()
    excluded_specialties: frozenset[str] = frozenset()
    sectors: frozenset[str] = frozenset()
    condition: str = ""
    effective_from: date | None = None
    confirmed: bool = True
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "profession": self.profession,
            "specialties": sorted(self.specialties),
            "excluded_specialties": sorted(self.excluded_specialties),
            "sectors": sorted(self.sectors),
            "condition": self.condition,
            "effective_from": self.effective_from.isoformat() if self.effective_from else None,
            "confirmed": self.confirmed,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> BillerRule:
        started = raw.get("effective_from")
        return cls(
            profession=raw["profession"],
            specialties=frozenset(raw.get("specialties", ())),
            excluded_specialties=frozenset(raw.get("excluded_specialties", ())),
            sectors=frozenset(raw.get("sectors", ())),
            condition=raw.get("condition", ""),
            effective_from=date.fromisoformat(started) if started else None,
            confirmed=bool(raw.get("confirmed", True)),
            source=raw.get("source", ""),
        )


@dataclass(frozen=True)
class Entry:
    """A dated version of a code."""

    code: str
    label: str
    act_type: str  # ActType NAME
    biller_role: str  # BillerRole NAME
    amount_cents: int
    overseas_amount_cents: int | None
    effective_from: date
    effective_to: date | None
    billers: tuple[BillerRule, ...]
    cumulable: bool
    extra_fee_allowed: bool
    quota: str
    rate_class: str
    counts_toward_remote_cap: bool
    assistance_setting: str  # AssistanceSetting NAME or ''
    operator_level: str  # OperatorLevel NAME or ''
    technical_forfait: str  # TechnicalForfait NAME or ''
    unconfirmed_fields: tuple[str, ...]
    reference: str
    source: str
    catalog: str = CATALOG

    @property
    def confirmed(self) -> bool:
        return not self.unconfirmed_fields

    @property
    def name(self) -> str:
        return f"catalogs/{self.catalog}/entries/{self.code}-{self.effective_from.isoformat()}"

    def in_force(self, day: date) -> bool:
        return self.effective_from <= day and (self.effective_to is None or day <= self.effective_to)


@dataclass(frozen=True)
class Parameter:
    """A dated parameter: a rate (basis points), an amount (cents), a count or a text."""

    name: str
    kind: str  # one of PARAMETER_KINDS
    value: int | str
    effective_from: date
    effective_to: date | None
    confirmed: bool
    source: str

    def in_force(self, day: date) -> bool:
        return self.effective_from <= day and (self.effective_to is None or day <= self.effective_to)

    @property
    def number(self) -> int:
        if not isinstance(self.value, int):
            raise TypeError(f"parameter {self.name} is not a number")
        return self.value

    @property
    def text(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class Catalog:
    """One version of the catalog."""

    catalog: str
    version: str
    currency: str
    entries: tuple[Entry, ...]
    parameters: tuple[Parameter, ...]
    sha256: str
    loaded_at: datetime | None = None
    _codes: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_codes", frozenset(e.code for e in self.entries))

    @property
    def codes(self) -> frozenset[str]:
        return self._codes

    def entries_on(self, day: date) -> list[Entry]:
        return [e for e in self.entries if e.in_force(day)]

    def parameter(self, name: str, day: date) -> Parameter | None:
        for parameter in self.parameters:
            if parameter.name == name and parameter.in_force(day):
                return parameter
        return None

    def parameters_on(self, day: date) -> list[Parameter]:
        return [p for p in self.parameters if p.in_force(day)]


# --- Parsing the data file ----------------------------------------------------------------------------------


def _enum_name(enum: Any, prefix: str, value: str, where: str) -> str:
    name = value if value.startswith(prefix) else prefix + value
    if name not in enum.keys() or name.endswith("_UNSPECIFIED"):  # noqa: SIM118 (an EnumTypeWrapper)
        raise CatalogError(f"{where}: {value!r} is not a {prefix.rstrip('_')} value")
    return name


def _optional_enum(enum: Any, prefix: str, value: str | None, where: str) -> str:
    return _enum_name(enum, prefix, value, where) if value else ""


def cents(amount: str, where: str) -> int:
    """'27.60' → 2760; whole cents only."""
    try:
        value = Decimal(amount)
    except (InvalidOperation, TypeError):
        raise CatalogError(f"{where}: {amount!r} is not an amount") from None
    scaled = value * 100
    if scaled != scaled.to_integral_value() or value < 0:
        raise CatalogError(f"{where}: {amount!r} is not a non-negative amount in whole cents")
    return int(scaled)


def _date(value: object, where: str) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    raise CatalogError(f"{where}: {value!r} is not a date (write 2026-01-01, unquoted)")


def _biller(raw: Mapping[str, Any], where: str) -> BillerRule:
    unknown = set(raw) - {
        "profession",
        "specialties",
        "excluded_specialties",
        "sectors",
        "condition",
        "effective_from",
        "confirmed",
        "source",
    }
    if unknown:
        raise CatalogError(f"{where}: unknown keys {sorted(unknown)}")
    condition = raw.get("condition", "")
    if condition and condition not in CONDITIONS:
        raise CatalogError(f"{where}: unknown condition {condition!r} (known: {sorted(CONDITIONS)})")
    started = raw.get("effective_from")
    return BillerRule(
        profession=_enum_name(practice_pb2.Profession, "PROFESSION_", raw["profession"], where),
        specialties=frozenset(
            _enum_name(practice_pb2.Specialty, "SPECIALTY_", s, where) for s in raw.get("specialties", ())
        ),
        excluded_specialties=frozenset(
            _enum_name(practice_pb2.Specialty, "SPECIALTY_", s, where)
            for s in raw.get("excluded_specialties", ())
        ),
        sectors=frozenset(
            _enum_name(practice_pb2.ConventionSector, "CONVENTION_SECTOR_", s, where)
            for s in raw.get("sectors", ())
        ),
        condition=condition,
        effective_from=_date(started, where) if started is not None else None,
        confirmed=bool(raw.get("confirmed", True)),
        source=str(raw.get("source", "")),
    )


_ENTRY_KEYS = frozenset(
    {
        "code",
        "label",
        "act_type",
        "biller_role",
        "amount",
        "overseas_amount",
        "effective_from",
        "effective_to",
        "billers",
        "cumulable",
        "extra_fee_allowed",
        "quota",
        "rate_class",
        "counts_toward_remote_cap",
        "assistance_setting",
        "operator_level",
        "technical_forfait",
        "unconfirmed",
        "reference",
        "source",
    }
)


def _entry(raw: Mapping[str, Any], index: int, catalog: str) -> Entry:
    where = f"entries[{index}] ({raw.get('code', '?')})"
    unknown = set(raw) - _ENTRY_KEYS
    if unknown:
        raise CatalogError(f"{where}: unknown keys {sorted(unknown)}")
    missing = {"code", "label", "act_type", "biller_role", "amount", "effective_from", "rate_class"} - set(
        raw
    )
    if missing:
        raise CatalogError(f"{where}: missing {sorted(missing)}")
    unconfirmed = tuple(raw.get("unconfirmed", ()))
    bad = set(unconfirmed) - UNCONFIRMABLE_FIELDS
    if bad:
        raise CatalogError(f"{where}: unconfirmed lists unknown fields {sorted(bad)}")
    effective_to = raw.get("effective_to")
    entry = Entry(
        code=str(raw["code"]),
        label=str(raw["label"]),
        act_type=_enum_name(billing_pb2.ActType, "ACT_TYPE_", raw["act_type"], where),
        biller_role=_enum_name(billing_pb2.BillerRole, "BILLER_ROLE_", raw["biller_role"], where),
        amount_cents=cents(raw["amount"], where),
        overseas_amount_cents=cents(raw["overseas_amount"], where) if "overseas_amount" in raw else None,
        effective_from=_date(raw["effective_from"], where),
        effective_to=_date(effective_to, where) if effective_to is not None else None,
        billers=tuple(_biller(b, f"{where}.billers[{i}]") for i, b in enumerate(raw.get("billers", ()))),
        cumulable=bool(raw.get("cumulable", False)),
        extra_fee_allowed=bool(raw.get("extra_fee_allowed", False)),
        quota=str(raw.get("quota", "")),
        rate_class=str(raw["rate_class"]),
        counts_toward_remote_cap=bool(raw.get("counts_toward_remote_cap", False)),
        assistance_setting=_optional_enum(
            billing_pb2.AssistanceSetting, "ASSISTANCE_SETTING_", raw.get("assistance_setting"), where
        ),
        operator_level=_optional_enum(
            billing_pb2.OperatorLevel, "OPERATOR_LEVEL_", raw.get("operator_level"), where
        ),
        technical_forfait=_optional_enum(
            billing_pb2.TechnicalForfait, "TECHNICAL_FORFAIT_", raw.get("technical_forfait"), where
        ),
        unconfirmed_fields=unconfirmed,
        reference=str(raw.get("reference", "")),
        source=str(raw.get("source", "")),
        catalog=catalog,
    )
    if entry.effective_to is not None and entry.effective_to < entry.effective_from:
        raise CatalogError(f"{where}: effective_to is before effective_from")
    if not entry.billers and entry.biller_role != "BILLER_ROLE_EXPLOITANT":
        raise CatalogError(f"{where}: who may bill it (billers) is required")
    return entry


def _parameter(raw: Mapping[str, Any], index: int) -> Parameter:
    where = f"parameters[{index}] ({raw.get('name', '?')})"
    unknown = set(raw) - {"name", "effective_from", "effective_to", "confirmed", "source", *PARAMETER_KINDS}
    if unknown:
        raise CatalogError(f"{where}: unknown keys {sorted(unknown)}")
    kinds = [k for k in PARAMETER_KINDS if k in raw]
    if len(kinds) != 1:
        raise CatalogError(f"{where}: exactly one of {', '.join(PARAMETER_KINDS)} is required")
    kind = kinds[0]
    value: int | str
    if kind == "money":
        value = cents(raw["money"], where)
    elif kind == "text":
        value = str(raw["text"])
    else:
        value = raw[kind]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CatalogError(f"{where}: {kind} must be a non-negative integer")
        if kind == "basis_points" and value > 10000:
            raise CatalogError(f"{where}: basis points are at most 10000 (100 %)")
    effective_to = raw.get("effective_to")
    return Parameter(
        name=str(raw["name"]),
        kind=kind,
        value=value,
        effective_from=_date(raw["effective_from"], where),
        effective_to=_date(effective_to, where) if effective_to is not None else None,
        confirmed=bool(raw.get("confirmed", True)),
        source=str(raw.get("source", "")),
    )


def _overlaps(items: Sequence[tuple[str, date, date | None]]) -> list[str]:
    """Names having two versions in force on the same day."""
    by_name: dict[str, list[tuple[date, date | None]]] = {}
    for name, start, end in items:
        by_name.setdefault(name, []).append((start, end))
    found = []
    for name, periods in by_name.items():
        periods.sort()
        for (_, end), (next_start, _) in itertools.pairwise(periods):
            if end is None or end >= next_start:
                found.append(name)
                break
    return found


def parse(text: str) -> Catalog:
    """The catalog of a data file's text; CatalogError names the first problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"not valid TOML: {exc}") from None
    for key in ("catalog", "version", "currency"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise CatalogError(f"{key} is required")
    if raw["currency"] != "EUR":
        raise CatalogError("currency must be EUR")
    catalog = raw["catalog"]
    entries = tuple(_entry(e, i, catalog) for i, e in enumerate(raw.get("entries", ())))
    parameters = tuple(_parameter(p, i) for i, p in enumerate(raw.get("parameters", ())))
    overlapping = _overlaps([(e.code, e.effective_from, e.effective_to) for e in entries])
    overlapping += _overlaps([(p.name, p.effective_from, p.effective_to) for p in parameters])
    if overlapping:
        raise CatalogError(f"two versions in force on the same day: {', '.join(sorted(overlapping))}")
    rate_classes = frozenset(e.rate_class for e in entries)
    for parameter in parameters:
        is_key = parameter.name.startswith("quota.") and parameter.name.endswith(".key")
        if is_key and parameter.value not in QUOTA_KEYS:
            raise CatalogError(f"{parameter.name}: {parameter.value!r} is not one of {sorted(QUOTA_KEYS)}")
        if parameter.name in LIST_PARAMETERS:
            known = LIST_PARAMETERS[parameter.name] or rate_classes
            if parameter.kind != "text":
                raise CatalogError(f"{parameter.name}: a comma-separated list (text) is required")
            unknown = sorted({i.strip() for i in parameter.text.split(",") if i.strip()} - known)
            if unknown:
                raise CatalogError(f"{parameter.name}: unknown values {unknown} (known: {sorted(known)})")
    for entry in entries:
        if entry.quota and not any(p.name == f"quota.{entry.quota}.max" for p in parameters):
            raise CatalogError(
                f"{entry.code}: quota {entry.quota!r} has no parameter quota.{entry.quota}.max"
            )
        if not any(p.name == f"reimbursement_rate.{entry.rate_class}" for p in parameters):
            raise CatalogError(f"{entry.code}: rate class {entry.rate_class!r} has no reimbursement_rate")
    return Catalog(
        catalog=catalog,
        version=raw["version"],
        currency=raw["currency"],
        entries=entries,
        parameters=parameters,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
    )


def read_data_file(path: Path = DATA_FILE) -> Catalog:
    return parse(path.read_text(encoding="utf-8"))


# --- Loading into the database (sync: run inside yoyo's migration transaction) ------------------------------

GET_VERSION = "SELECT sha256 FROM billing.catalog_versions WHERE catalog = %s AND version = %s"
INSERT_VERSION = "INSERT INTO billing.catalog_versions (catalog, version, sha256) VALUES (%s, %s, %s)"
INSERT_ENTRY = """
INSERT INTO billing.catalog_entries (catalog, version, code, effective_from, effective_to, label,
    act_type, biller_role, amount_cents, overseas_amount_cents, billers, cumulable, extra_fee_allowed, quota,
    rate_class, counts_toward_remote_cap, assistance_setting, operator_level, technical_forfait,
    unconfirmed_fields, reference, source, position)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
INSERT_PARAMETER = """
INSERT INTO billing.catalog_parameters (catalog, version, name, effective_from, effective_to, kind,
    number_value, text_value, confirmed, source)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
SET_CURRENT = """
INSERT INTO billing.catalogs (catalog, current_version) VALUES (%s, %s)
ON CONFLICT (catalog) DO UPDATE SET current_version = EXCLUDED.current_version
"""


def load(cursor: Any, catalog: Catalog) -> bool:
    """Load a catalog version and make it current; False when that version was already loaded (no-op).

    `cursor` is a DB-API cursor (psycopg 3) inside the caller's transaction.
    """
    cursor.execute(GET_VERSION, (catalog.catalog, catalog.version))
    row = cursor.fetchone()
    if row is not None:
        if row[0] != catalog.sha256:
            raise CatalogError(
                f"catalog {catalog.catalog} version {catalog.version} was loaded with other content: "
                "bump `version` in the data file"
            )
        cursor.execute(SET_CURRENT, (catalog.catalog, catalog.version))
        return False
    cursor.execute(INSERT_VERSION, (catalog.catalog, catalog.version, catalog.sha256))
    for position, e in enumerate(catalog.entries):
        cursor.execute(
            INSERT_ENTRY,
            (
                catalog.catalog,
                catalog.version,
                e.code,
                e.effective_from,
                e.effective_to,
                e.label,
                e.act_type,
                e.biller_role,
                e.amount_cents,
                e.overseas_amount_cents,
                json.dumps([b.to_json() for b in e.billers]),
                e.cumulable,
                e.extra_fee_allowed,
                e.quota,
                e.rate_class,
                e.counts_toward_remote_cap,
                e.assistance_setting,
                e.operator_level,
                e.technical_forfait,
                list(e.unconfirmed_fields),
                e.reference,
                e.source,
                position,
            ),
        )
    for p in catalog.parameters:
        cursor.execute(
            INSERT_PARAMETER,
            (
                catalog.catalog,
                catalog.version,
                p.name,
                p.effective_from,
                p.effective_to,
                p.kind,
                p.value if isinstance(p.value, int) else None,
                p.value if isinstance(p.value, str) else None,
                p.confirmed,
                p.source,
            ),
        )
    cursor.execute(SET_CURRENT, (catalog.catalog, catalog.version))
    return True


def load_migration(conn: Any) -> None:
    """yoyo step: load the repository's data file."""
    cursor = conn.cursor()
    try:
        load(cursor, read_data_file())
    finally:
        cursor.close()


def unload_migration(conn: Any) -> None:
    """yoyo rollback step: forget every loaded version (the ledger keeps its own copies of what it billed)."""
    cursor = conn.cursor()
    try:
        for table in ("catalogs", "catalog_parameters", "catalog_entries", "catalog_versions"):
            cursor.execute(f"DELETE FROM billing.{table}")  # noqa: S608 (fixed table names)
    finally:
        cursor.close()


# --- Reading back from rows (the service) -------------------------------------------------------------------


def from_rows(
    version_row: Mapping[str, Any],
    entry_rows: Iterable[Mapping[str, Any]],
    parameter_rows: Iterable[Mapping[str, Any]],
) -> Catalog:
    """The catalog version the database holds, from its rows (see store.BillingStore.load_catalog)."""
    catalog = version_row["catalog"]
    entries = tuple(
        Entry(
            code=r["code"],
            label=r["label"],
            act_type=r["act_type"],
            biller_role=r["biller_role"],
            amount_cents=r["amount_cents"],
            overseas_amount_cents=r["overseas_amount_cents"],
            effective_from=r["effective_from"],
            effective_to=r["effective_to"],
            billers=tuple(BillerRule.from_json(b) for b in json.loads(r["billers"])),
            cumulable=r["cumulable"],
            extra_fee_allowed=r["extra_fee_allowed"],
            quota=r["quota"],
            rate_class=r["rate_class"],
            counts_toward_remote_cap=r["counts_toward_remote_cap"],
            assistance_setting=r["assistance_setting"],
            operator_level=r["operator_level"],
            technical_forfait=r["technical_forfait"],
            unconfirmed_fields=tuple(r["unconfirmed_fields"]),
            reference=r["reference"],
            source=r["source"],
            catalog=catalog,
        )
        for r in entry_rows
    )
    parameters = tuple(
        Parameter(
            name=r["name"],
            kind=r["kind"],
            value=r["number_value"] if r["number_value"] is not None else r["text_value"],
            effective_from=r["effective_from"],
            effective_to=r["effective_to"],
            confirmed=r["confirmed"],
            source=r["source"],
        )
        for r in parameter_rows
    )
    return Catalog(
        catalog=catalog,
        version=version_row["version"],
        currency="EUR",
        entries=entries,
        parameters=parameters,
        sha256=version_row["sha256"],
        loaded_at=version_row["loaded_at"],
    )
