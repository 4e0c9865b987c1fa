"""RPC handlers of parcours.billing.v1.BillingService.

The proto's field rules are checked by the kit before a handler runs; the handlers check what spans fields
(a téléexpertise needs a requester, a region agrees with `overseas`, codes exist in the catalog...), turn the
request into the rule engine's `rules.Act`, gather the facts its rules need (quota counters, the performer's
recorded téléconsultations, the contract policy's answer) and write or read the ledger.

Who sees what. Hub components acting on their own behalf (workflow workers) see and record everything: the
hub's workflows record the acts of the cases they run, in every participant's name. A component presenting
a token (the console, for an officer) is the token's person, never the hub (services/kit/auth.py). The
activity report (counts and amounts per region, GHT, month and code; no patient, no practitioner) follows the
kit's report scope (services/kit/reports.py): an ARS officer their region, an establishment its GHT.
Everyone else acts through an establishment (a practitioner's token only through an establishment where they
practise: the kit's token-binding check runs before every handler):
- an establishment's billing staff (ROLE_BILLING) see, reverse and export that establishment's lines, and
  record acts billed at the establishment for the practitioners who practise there;
- a practitioner sees their own lines, and quotes and records the acts they take part in, billed in their own
  name only: an act with lines for other professionals is recorded by the hub's workflows or the billing
  staff, so nobody can bill — and use up the quota of — another practitioner.
Quoting or recording an act for a patient needs the patient to be visible to the caller (the directory
decides, `services.kit.directory`): a patient the caller may not see and one that does not exist get the same
PERMISSION_DENIED PATIENT_NOT_VISIBLE, before any counter is read, so quotas tell nothing of another GHT's
patients. Permission is checked before existence: a charge the caller may not see and one that does not
exist get the same PERMISSION_DENIED. Every RPC touching patient data is audited by the kit; handlers name the
resource and the patient.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import asyncpg
import grpc
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc
from parcours.options.v1 import options_pb2
from parcours.type.v1 import practice_pb2

from services.billing import export, rules
from services.billing.catalog import CATALOG, Catalog, Entry, Parameter
from services.billing.contracts import ContractPolicy
from services.billing.store import (
    LEDGER,
    BillingStore,
    ChargeFilter,
    ChargeRow,
    money,
    set_date,
    timestamp,
)
from services.kit import names, reports
from services.kit.audit import audit_patients, audit_target
from services.kit.auth import Principal, current_principal
from services.kit.directory import DirectoryClient
from services.kit.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from services.kit.idempotency import Call
from services.kit.pagination import decode_token, encode_token, next_page_token, page_size, split_page

SERVICE_NAME = billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name

BILLING = options_pb2.ROLE_BILLING
PRACTITIONER = options_pb2.ROLE_PRACTITIONER

# A recorded act may be dated a little in the future of the server's clock (clients' clocks drift).
FUTURE_LEEWAY = timedelta(minutes=5)
MAX_EXPORT_DAYS = 366
MAX_EXPORT_LINES = 50_000
_NO_SPECIALTY = frozenset({"PROFESSION_PHYSICIAN", "PROFESSION_DENTIST"})


# --- Catalog ------------------------------------------------------------------------------------------------


class CatalogCache:
    """The current catalog version, re-read from the database at most every `refresh_seconds`."""

    def __init__(self, store: BillingStore, refresh_seconds: float) -> None:
        self._store = store
        self._refresh = refresh_seconds
        self._catalog: Catalog | None = None
        self._loaded = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> Catalog:
        if self._catalog is not None and time.monotonic() - self._loaded < self._refresh:
            return self._catalog
        async with self._lock:
            if self._catalog is None or time.monotonic() - self._loaded >= self._refresh:
                found = await self._store.load_catalog()
                if found is None:
                    raise Unavailable(
                        "CATALOG_NOT_LOADED", "the billing catalog is not loaded (run migrations)"
                    )
                self._catalog = found
                self._loaded = time.monotonic()
        return self._catalog


# --- Requests to the rule engine's act ----------------------------------------------------------------------


def _enum_name(enum: object, value: int) -> str:
    return enum.Name(value)  # type: ignore[attr-defined, no-any-return]


def _date_of(value: object) -> date:
    return date(value.year, value.month, value.day)  # type: ignore[attr-defined]


def _optional_date(
    circumstances: billing_pb2.Circumstances,
    field: Literal["last_in_person_visit_date", "hospital_discharge_date"],
) -> date | None:
    """A circumstance's date when given (§7.11); a date that does not exist is refused naming the field."""
    if not circumstances.HasField(field):
        return None
    value = getattr(circumstances, field)
    try:
        return date(value.year, value.month, value.day)
    except ValueError:
        raise InvalidArgument.one(f"act.circumstances.{field}", "is not a calendar date") from None


def _cents(value: object) -> int:
    return int(value.units) * 100 + int(value.nanos) // 10_000_000  # type: ignore[attr-defined]


def _participant(
    given: billing_pb2.Participant, field: str, act: billing_pb2.Act, violations: list[FieldViolation]
) -> rules.Participant:
    profession = _enum_name(practice_pb2.Profession, given.profession)
    specialty = _enum_name(practice_pb2.Specialty, given.specialty)
    if profession == "PROFESSION_PHYSICIAN" and specialty == "SPECIALTY_NONE":
        violations.append(FieldViolation(f"{field}.specialty", "a physician has a medical specialty"))
    if profession not in _NO_SPECIALTY and specialty != "SPECIALTY_NONE":
        violations.append(
            FieldViolation(
                f"{field}.specialty", "professions other than physician and dentist: SPECIALTY_NONE"
            )
        )
    return rules.Participant(
        practitioner=given.practitioner,
        profession=profession,
        specialty=specialty,
        sector=_enum_name(practice_pb2.ConventionSector, given.sector),
        establishment=given.establishment or act.establishment,
        overseas=given.overseas if given.HasField("overseas") else act.overseas,
    )


def act_from_request(given: billing_pb2.Act, patient: str, catalog: Catalog) -> rules.Act:
    """The rule engine's act; InvalidArgument names every field that spans rules the proto cannot say."""
    violations: list[FieldViolation] = []
    act_type = _enum_name(billing_pb2.ActType, given.type)
    region = given.region.removeprefix("regions/")
    if given.overseas != (region in rules.DROM_REGIONS):
        expected = "true" if region in rules.DROM_REGIONS else "false"  # as the field is spelt in proto JSON
        violations.append(FieldViolation("act.overseas", f"must be {expected} for region {region}"))
    performer = _participant(given.performer, "act.performer", given, violations)
    requester = assistant = None
    if given.HasField("requester"):
        requester = _participant(given.requester, "act.requester", given, violations)
    elif act_type == rules.TELEEXPERTISE:
        violations.append(FieldViolation("act.requester", "is required for a téléexpertise"))
    if given.HasField("assistant"):
        assistant = _participant(given.assistant, "act.assistant", given, violations)
        if act_type != rules.TELECONSULTATION:
            violations.append(FieldViolation("act.assistant", "only with a téléconsultation"))
        if not given.assistance_setting:
            violations.append(FieldViolation("act.assistance_setting", "is required with an assistant"))
    elif given.assistance_setting:
        violations.append(FieldViolation("act.assistant", "is required with an assistance setting"))
    sick_leave = None
    if given.HasField("sick_leave"):
        if act_type != rules.TELECONSULTATION:
            violations.append(FieldViolation("act.sick_leave", "only with a téléconsultation"))
        sick_leave = rules.SickLeave(
            days=given.sick_leave.days,
            ongoing_days=given.sick_leave.ongoing_days,
            in_person_impossible_justified=given.sick_leave.in_person_impossible_justified,
        )
    telesurveillance = None
    if given.HasField("telesurveillance"):
        ts = given.telesurveillance
        if act_type != rules.TELESURVEILLANCE:
            violations.append(FieldViolation("act.telesurveillance", "only with a télésurveillance act"))
        if not ts.operator_level and not ts.technical_forfait:
            violations.append(FieldViolation("act.telesurveillance", "names no forfait"))
        if ts.technical_forfait and not ts.exploitant:
            violations.append(
                FieldViolation("act.telesurveillance.exploitant", "is required with a forfait technique")
            )
        telesurveillance = rules.Telesurveillance(
            operator_level=_enum_name(billing_pb2.OperatorLevel, ts.operator_level)
            if ts.operator_level
            else "",
            technical_forfait=(
                _enum_name(billing_pb2.TechnicalForfait, ts.technical_forfait) if ts.technical_forfait else ""
            ),
            device_listed=ts.device_listed,
            exploitant=ts.exploitant,
        )
    elif act_type == rules.TELESURVEILLANCE:
        violations.append(FieldViolation("act.telesurveillance", "is required for a télésurveillance act"))
    for index, code in enumerate(given.additional_codes):
        if code not in catalog.codes:
            violations.append(
                FieldViolation(f"act.additional_codes[{index}]", "is not a code of the catalog")
            )
    activity = None
    if given.HasField("performer_activity"):
        activity = rules.ActivityToDate(
            conventioned_acts=given.performer_activity.conventioned_acts,
            teleconsultations=given.performer_activity.teleconsultations,
            teleexpertises=given.performer_activity.teleexpertises,
            own_patient_teleconsultations=given.performer_activity.own_patient_teleconsultations,
        )
    care = None
    if given.HasField("care_with_performer"):
        care = rules.CareWithPerformer(
            in_person_acts=given.care_with_performer.in_person_acts,
            remote_acts=given.care_with_performer.remote_acts,
        )
    if violations:
        raise InvalidArgument(violations)
    c = given.circumstances
    return rules.Act(
        act_type=act_type,
        teleconsultation_company=given.teleconsultation_company,
        act_time=given.act_time.ToDatetime(tzinfo=UTC),
        establishment=given.establishment,
        region=region,
        performer=performer,
        patient_age=given.patient_age,
        patient=patient,
        requester=requester,
        assistant=assistant,
        assistance_setting=(
            _enum_name(billing_pb2.AssistanceSetting, given.assistance_setting)
            if given.assistance_setting
            else ""
        ),
        circumstances=rules.Circumstances(
            oriented_by_treating_physician=c.oriented_by_treating_physician,
            performer_is_treating_physician=c.performer_is_treating_physician,
            emergency=c.emergency,
            no_available_treating_physician=c.no_available_treating_physician,
            care_home_resident=c.care_home_resident,
            prisoner=c.prisoner,
            zip_resident=c.zip_resident,
            sas_orientation=c.sas_orientation,
            performer_in_patient_territory=c.performer_in_patient_territory,
            long_term_condition=c.long_term_condition,
            patient_seen_in_person=c.patient_seen_in_person,
            performer_is_referent_midwife=c.performer_is_referent_midwife,
            underserved_zone_resident=c.underserved_zone_resident,
            last_in_person_visit_date=_optional_date(c, "last_in_person_visit_date"),
            hospital_discharge_date=_optional_date(c, "hospital_discharge_date"),
        ),
        sick_leave=sick_leave,
        telesurveillance=telesurveillance,
        additional_codes=tuple(given.additional_codes),
        extra_fee_cents=_cents(given.extra_fee) if given.HasField("extra_fee") else 0,
        performer_activity=activity,
        care_with_performer=care,
    )


# --- The engine's answers to protos -------------------------------------------------------------------------


def line_pb(line: rules.Line, number: int, act: rules.Act, catalog_version: str) -> billing_pb2.Charge:
    charge = billing_pb2.Charge(
        kind=billing_pb2.Charge.KIND_CHARGE,
        line=number,
        code=line.code,
        label=line.entry.label,
        biller_role=billing_pb2.BillerRole.Value(line.biller_role),
        practitioner=line.practitioner,
        exploitant=line.exploitant,
        establishment=line.establishment,
        patient=act.patient,
        act_type=billing_pb2.ActType.Value(act.act_type),
        act_time=timestamp(act.act_time),
        reimbursement_rate_bp=line.rate_bp,
        overseas=line.overseas,
        catalog_entry=line.entry.name,
        catalog_version=catalog_version,
        unconfirmed=line.unconfirmed,
        quota_slot=line.quota.used + 1 if line.quota else 0,
        counts_toward_remote_cap=line.counts_toward_remote_cap,
        prescriber=line.prescriber,
    )
    set_date(act.act_date, charge.act_date)
    if line.prescriber:
        set_date(act.act_date, charge.prescription_date)
    money(line.amount_cents, charge.amount)
    money(line.extra_fee_cents, charge.extra_fee)
    money(line.reimbursement_cents, charge.reimbursement)
    money(line.participation_cents, charge.participation)
    return charge


def quote_pb(quote: rules.Quote, act: rules.Act, numbers: dict[int, int]) -> billing_pb2.Quote:
    """The Quote message; `numbers` maps id(line) to its line number within the act."""
    message = billing_pb2.Quote(
        billable=quote.billable,
        lines=[line_pb(line, numbers[id(line)], act, quote.catalog_version) for line in quote.lines],
        refusals=[_finding(f) for f in quote.refusals],
        warnings=[_finding(f) for f in quote.warnings],
        prescription_refusals=[_finding(f) for f in quote.prescription_refusals],
        applied_rules=[
            billing_pb2.AppliedRule(
                rule=a.rule,
                reference=a.reference,
                code=a.code,
                reason=a.reason,
                source=a.source,
                confirmed=a.confirmed,
            )
            for a in quote.applied
        ],
        catalog_version=quote.catalog_version,
        unconfirmed=quote.unconfirmed,
    )
    set_date(quote.act_date, message.tariff_date)
    money(quote.total_cents, message.total)
    money(quote.total_reimbursement_cents, message.total_reimbursement)
    return message


def _finding(f: rules.Finding) -> billing_pb2.Finding:
    return billing_pb2.Finding(
        reason=f.reason, code=f.code, message=f.message, reference=f.reference, source=f.source
    )


def entry_pb(entry: Entry) -> billing_pb2.CatalogEntry:
    message = billing_pb2.CatalogEntry(
        name=entry.name,
        code=entry.code,
        label=entry.label,
        act_type=billing_pb2.ActType.Value(entry.act_type),
        biller_role=billing_pb2.BillerRole.Value(entry.biller_role),
        cumulable=entry.cumulable,
        extra_fee_allowed=entry.extra_fee_allowed,
        quota=entry.quota,
        rate_class=entry.rate_class,
        counts_toward_remote_cap=entry.counts_toward_remote_cap,
        assistance_setting=billing_pb2.AssistanceSetting.Value(
            entry.assistance_setting or "ASSISTANCE_SETTING_UNSPECIFIED"
        ),
        operator_level=billing_pb2.OperatorLevel.Value(entry.operator_level or "OPERATOR_LEVEL_UNSPECIFIED"),
        technical_forfait=billing_pb2.TechnicalForfait.Value(
            entry.technical_forfait or "TECHNICAL_FORFAIT_UNSPECIFIED"
        ),
        confirmed=entry.confirmed,
        unconfirmed_fields=list(entry.unconfirmed_fields),
        source=f"{entry.reference}: {entry.source}" if entry.reference else entry.source,
    )
    money(entry.amount_cents, message.amount)
    if entry.overseas_amount_cents is not None:
        money(entry.overseas_amount_cents, message.overseas_amount)
    set_date(entry.effective_from, message.effective_from)
    if entry.effective_to is not None:
        set_date(entry.effective_to, message.effective_to)
    for rule in entry.billers:
        biller = message.billers.add(
            profession=practice_pb2.Profession.Value(rule.profession),
            specialties=[practice_pb2.Specialty.Value(s) for s in sorted(rule.specialties)],
            excluded_specialties=[practice_pb2.Specialty.Value(s) for s in sorted(rule.excluded_specialties)],
            sectors=[practice_pb2.ConventionSector.Value(s) for s in sorted(rule.sectors)],
            condition=rule.condition,
            confirmed=rule.confirmed,
            source=rule.source,
        )
        if rule.effective_from is not None:
            set_date(rule.effective_from, biller.effective_from)
    return message


def parameter_pb(parameter: Parameter) -> billing_pb2.Parameter:
    message = billing_pb2.Parameter(
        name=parameter.name, confirmed=parameter.confirmed, source=parameter.source
    )
    set_date(parameter.effective_from, message.effective_from)
    if parameter.effective_to is not None:
        set_date(parameter.effective_to, message.effective_to)
    if parameter.kind == "basis_points":
        message.basis_points = parameter.number
    elif parameter.kind == "money":
        money(parameter.number, message.money)
    elif parameter.kind == "count":
        message.count = parameter.number
    else:
        message.text = parameter.text
    return message


# --- Authorisation ------------------------------------------------------------------------------------------


def _not_visible() -> PermissionDenied:
    return PermissionDenied("CHARGE_NOT_VISIBLE", "the charge is not the caller's (or does not exist)")


def _participants(act: rules.Act) -> set[str]:
    return {p.practitioner for p in (act.performer, act.requester, act.assistant) if p is not None}


def _unrestricted(principal: Principal) -> bool:
    """A hub component acting on its own behalf (not for a token's person, not for a caller it names)."""
    return principal.hub_component


def _may_act(principal: Principal, act: rules.Act) -> None:
    """Who may quote or record an act: its establishment's billing staff, or a participant through it."""
    if _unrestricted(principal):
        return
    establishments = {act.establishment} | {
        p.establishment for p in (act.performer, act.requester, act.assistant) if p is not None
    }
    if not principal.establishment or principal.establishment not in establishments:
        raise PermissionDenied(
            "ESTABLISHMENT_NOT_CALLER", "an establishment records only acts billed at that establishment"
        )
    if principal.has_any([BILLING]):
        return
    if principal.practitioner not in _participants(act):
        raise PermissionDenied("NOT_A_PARTICIPANT", "a practitioner records only acts they take part in")


def _may_see(principal: Principal, charge: billing_pb2.Charge) -> bool:
    if _unrestricted(principal):
        return True
    if principal.has_any([BILLING]) and principal.establishment == charge.establishment:
        return True
    return bool(principal.practitioner) and principal.practitioner == charge.practitioner


def _scope(principal: Principal, practitioner: str, establishment: str) -> tuple[str, str]:
    """The (practitioner, establishment) filters a caller may use, defaults applied."""
    if _unrestricted(principal):
        return practitioner, establishment
    if principal.has_any([BILLING]):
        if not principal.establishment:
            raise PermissionDenied("ESTABLISHMENT_REQUIRED", "billing staff act for an establishment")
        if establishment and establishment != principal.establishment:
            raise PermissionDenied(
                "ESTABLISHMENT_NOT_CALLER", "billing staff see only their establishment's charges"
            )
        return practitioner, principal.establishment
    if practitioner and practitioner != principal.practitioner:
        raise PermissionDenied("PRACTITIONER_NOT_CALLER", "a practitioner sees only their own charges")
    return principal.practitioner, establishment


def _period(start: object, end: object) -> tuple[date, date]:
    first, last = _date_of(start), _date_of(end)
    if last < first:
        raise InvalidArgument.one("end_date", "must not be before start_date")
    return first, last


def _act_name(act_id: str) -> str:
    """How the ledger names an act (acts are named by their client-chosen id)."""
    return f"acts/{act_id}"


def _digest(patient: str, act: billing_pb2.Act) -> bytes:
    return hashlib.sha256(patient.encode() + b"\0" + act.SerializeToString(deterministic=True)).digest()


def _refused(quote: rules.Quote) -> FailedPrecondition:
    first = quote.refusals[0]
    return FailedPrecondition(
        first.reason,
        f"nothing to bill: {first.message}",
        {"refusals": ",".join(dict.fromkeys(f.reason for f in quote.refusals))},
    )


# --- The servicer -------------------------------------------------------------------------------------------


class BillingServicer(billing_pb2_grpc.BillingServiceServicer):
    def __init__(
        self,
        store: BillingStore,
        contracts: ContractPolicy,
        directory: DirectoryClient,
        *,
        catalog_refresh_seconds: float = 60.0,
    ) -> None:
        self._store = store
        self._contracts = contracts
        self._directory = directory
        self._catalog = CatalogCache(store, catalog_refresh_seconds)

    async def ready(self) -> Catalog:
        """Loads the catalog; fails (CATALOG_NOT_LOADED) when the migrations have not run."""
        return await self._catalog.get()

    async def _authorise(self, principal: Principal, act: rules.Act) -> None:
        """The caller may quote or record this act, for this patient (see the module docstring)."""
        _may_act(principal, act)
        if act.patient and not _unrestricted(principal):
            await self._directory.require_visible(act.patient, principal)

    async def _own_lines(self, principal: Principal, quote: rules.Quote) -> None:
        """Only the hub's workflows bill a line in the name of a practitioner who did not ask for it."""
        if _unrestricted(principal):
            return
        if principal.has_any([BILLING]):
            for line in quote.lines:
                if line.establishment != principal.establishment or (
                    line.practitioner
                    and not await self._directory.practises_at(line.practitioner, principal.establishment)
                ):
                    raise PermissionDenied(
                        "LINE_OF_ANOTHER_ESTABLISHMENT",
                        "billing staff record lines billed at their establishment, for its practitioners",
                    )
            return
        # An exploitant's line (a device company's forfait technique) is nobody's practitioner line.
        if any(line.practitioner not in ("", principal.practitioner) for line in quote.lines):
            raise PermissionDenied(
                "LINE_OF_ANOTHER_PRACTITIONER",
                "a practitioner records only lines billed in their own name; an act with other billing "
                "professionals is recorded by the hub's workflows or the establishment's billing staff",
            )

    async def _billed_at(self, establishment: str, act: rules.Act) -> tuple[str, str | None]:
        """(region code, GHT id) where a line billed at `establishment` counts: the directory's, as it stands
        when the line is recorded; for an establishment the directory does not know, the act's region."""
        found = await self._directory.establishment(establishment)
        if found is None or not found.region:
            return act.region, None
        return (
            names.REGION.parse(found.region, "establishment.region"),
            names.GHT.parse_optional(found.ght, "establishment.ght"),
        )

    async def _facts(self, needs: rules.Needs) -> rules.Facts:
        remote = 0
        if needs.remote_cap is not None:
            remote = await self._store.remote_recorded(*needs.remote_cap)
        contract = None
        if needs.contract_activity is not None:
            contract = await self._contracts.decide(needs.contract_activity)
        pair = 0
        if needs.alternance is not None:
            pair = await self._store.pair_teleconsultations(needs.alternance)
        return rules.Facts(
            quota_used=await self._store.quota_used(needs.quota_keys),
            remote_recorded=remote,
            contract=contract,
            pair_remote_recorded=pair,
        )

    # --- catalog ---

    async def ListCatalogs(
        self, request: billing_pb2.ListCatalogsRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ListCatalogsResponse:
        # One catalog today, so every page is the last; the token is still checked like any other.
        after = decode_token(request.page_token, {})
        catalog = await self._catalog.get()
        found = billing_pb2.Catalog(name=f"catalogs/{catalog.catalog}", version=catalog.version)
        if catalog.loaded_at is not None:
            found.load_time.CopyFrom(timestamp(catalog.loaded_at))
        page = [found] if after is None or found.name > after else []
        return billing_pb2.ListCatalogsResponse(catalogs=page)

    async def GetCatalog(
        self, request: billing_pb2.GetCatalogRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetCatalogResponse:
        catalog = await self._catalog.get()
        if request.name != f"catalogs/{catalog.catalog}":
            raise NotFound("CATALOG_NOT_FOUND", f"no catalog {request.name}")
        day = _date_of(request.as_of) if request.HasField("as_of") else datetime.now(rules.TARIFF_ZONE).date()
        message = billing_pb2.Catalog(
            name=request.name,
            version=catalog.version,
            entries=[entry_pb(e) for e in catalog.entries_on(day)],
            parameters=[parameter_pb(p) for p in catalog.parameters_on(day)],
        )
        set_date(day, message.as_of)
        if catalog.loaded_at is not None:
            message.load_time.CopyFrom(timestamp(catalog.loaded_at))
        return billing_pb2.GetCatalogResponse(catalog=message)

    async def ListCatalogEntries(
        self, request: billing_pb2.ListCatalogEntriesRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ListCatalogEntriesResponse:
        catalog = await self._catalog.get()
        if request.parent != f"catalogs/{catalog.catalog}":
            raise NotFound("CATALOG_NOT_FOUND", f"no catalog {request.parent}")
        unknown = [
            FieldViolation(f"codes[{i}]", "is not a code of the catalog")
            for i, code in enumerate(request.codes)
            if code not in catalog.codes
        ]
        if unknown:
            raise InvalidArgument(unknown)
        as_of = _date_of(request.as_of) if request.HasField("as_of") else None
        filters: dict[str, object] = {
            "as_of": as_of.isoformat() if as_of else "",
            "codes": sorted(request.codes),
            "act_type": request.act_type,
        }
        after = decode_token(request.page_token, filters)
        wanted_type = _enum_name(billing_pb2.ActType, request.act_type) if request.act_type else None
        entries = sorted(
            (
                e
                for e in catalog.entries
                if (as_of is None or e.in_force(as_of))
                and (not request.codes or e.code in request.codes)
                and (wanted_type is None or e.act_type == wanted_type)
            ),
            key=lambda e: e.name,
        )
        if after is not None:
            entries = [e for e in entries if e.name > after]
        size = page_size(request.page_size)
        page, more = entries[:size], len(entries) > size
        return billing_pb2.ListCatalogEntriesResponse(
            entries=[entry_pb(e) for e in page],
            next_page_token=encode_token(page[-1].name, filters) if more else "",
        )

    # --- quotes and records ---

    async def QuoteAct(
        self, request: billing_pb2.QuoteActRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.QuoteActResponse:
        if request.patient:
            audit_target(resource=request.patient, patient=request.patient)
        catalog = await self._catalog.get()
        act = act_from_request(request.act, request.patient, catalog)
        await self._authorise(current_principal(), act)
        facts = await self._facts(rules.needs(act, catalog))
        quote = rules.quote(act, catalog, facts)
        numbers = {id(line): i for i, line in enumerate(quote.lines, start=1)}
        return billing_pb2.QuoteActResponse(quote=quote_pb(quote, act, numbers))

    async def RecordAct(
        self, request: billing_pb2.RecordActRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.RecordActResponse:
        principal = current_principal()
        audit_target(resource=f"acts/{request.act_id}", patient=request.patient)
        catalog = await self._catalog.get()
        act = act_from_request(request.act, request.patient, catalog)
        if act.act_time > datetime.now(UTC) + FUTURE_LEEWAY:
            raise InvalidArgument.one(
                "act.act_time", "an act is recorded once it took place, not in the future"
            )
        await self._authorise(principal, act)
        digest = _digest(request.patient, request.act)
        quote = rules.quote(act, catalog, await self._facts(rules.needs(act, catalog)))
        await self._own_lines(principal, quote)
        numbers = {id(line): i for i, line in enumerate(quote.lines, start=1)}
        billed_at = {e: await self._billed_at(e, act) for e in {line.establishment for line in quote.lines}}
        patient_id = uuid.UUID(request.patient.removeprefix("patients/"))
        call = Call.of(request, "RecordAct", principal)
        async with self._store.transaction() as tx:
            # The request id (the kit's ledger: the same id for another call is REQUEST_ID_REUSED), then the
            # act id (one act per id, whatever request recorded it).
            retried = await LEDGER.claim(tx, call) is not None
            # A concurrent recording of the same act waits here, then replays what the first one wrote.
            await self._store.lock(tx, f"act:{request.act_id}")
            recorded = await self._store.get_act(request.act_id, tx=tx)
            if recorded is not None:
                # A retry: the lines of the first recording, even if the act would be refused now (its own
                # lines may have taken the last slot of a quota).
                replayed = await self._replay(recorded.digest, recorded.quote, request, digest, tx=tx)
                if not retried:
                    await LEDGER.record(tx, call, [_act_name(request.act_id)])
                return replayed
            if not quote.billable:
                raise _refused(quote)
            slots: dict[int, int] = {}
            # Sorted keys: two acts needing the same counters lock them in the same order (no deadlock).
            for line in sorted(
                (line for line in quote.lines if line.quota is not None),
                key=lambda line: line.quota.key if line.quota else "",
            ):
                claim = line.quota
                assert claim is not None
                slot = await self._store.take_quota_slot(tx, claim.key, claim.max)
                if slot is None:
                    quote.refuse_line(
                        line,
                        rules.Finding(
                            claim.refusal,
                            f"{line.code}: the limit of {claim.max} was reached by an act recorded meanwhile",
                            "§7.13" if claim.quota == "teleexpertise" else "§7.19",
                            code=line.code,
                        ),
                    )
                else:
                    slots[id(line)] = slot
            if not quote.billable:
                raise _refused(quote)
            message = quote_pb(quote, act, numbers)
            for line_message, line in zip(message.lines, quote.lines, strict=True):
                line_message.quota_slot = slots.get(id(line), 0)
            await self._store.insert_act(
                tx,
                act_id=request.act_id,
                request_id=uuid.UUID(request.request_id),
                digest=digest,
                patient_id=patient_id,
                establishment=act.establishment.removeprefix("establishments/"),
                act_type=act.act_type,
                act_time=act.act_time,
                act_date=act.act_date,
                quote=message.SerializeToString(),
                recorded_by=principal.practitioner or principal.subject or f"component/{principal.component}",
            )
            charges = await self._store.insert_charges(
                tx,
                [
                    ChargeRow(
                        kind="KIND_CHARGE",
                        act_id=request.act_id,
                        line=numbers[id(line)],
                        code=line.code,
                        label=line.entry.label,
                        biller_role=line.biller_role,
                        practitioner_rpps=line.practitioner.removeprefix("practitioners/") or None,
                        exploitant=line.exploitant or None,
                        establishment=line.establishment.removeprefix("establishments/"),
                        patient_id=patient_id,
                        act_type=act.act_type,
                        act_time=act.act_time,
                        act_date=act.act_date,
                        amount_cents=line.amount_cents,
                        extra_fee_cents=line.extra_fee_cents,
                        reimbursement_rate_bp=line.rate_bp,
                        reimbursement_cents=line.reimbursement_cents,
                        participation_cents=line.participation_cents,
                        overseas=line.overseas,
                        catalog_entry=line.entry.name,
                        catalog_version=quote.catalog_version,
                        unconfirmed=line.unconfirmed,
                        quota_key=line.quota.key if line.quota else None,
                        quota_slot=slots.get(id(line)),
                        counts_toward_remote_cap=line.counts_toward_remote_cap,
                        region_code=billed_at[line.establishment][0],
                        ght_id=billed_at[line.establishment][1],
                        prescriber_rpps=line.prescriber.removeprefix("practitioners/") or None,
                    )
                    for line in quote.lines
                ],
            )
            await LEDGER.record(tx, call, [_act_name(request.act_id)])
        return billing_pb2.RecordActResponse(charges=charges, quote=message)

    async def _replay(
        self,
        recorded_digest: bytes,
        recorded_quote: bytes,
        request: billing_pb2.RecordActRequest,
        digest: bytes,
        *,
        tx: asyncpg.Connection | None = None,
    ) -> billing_pb2.RecordActResponse:
        """The response of the act's first recording, with its lines as they are now."""
        if recorded_digest != digest:
            raise AlreadyExists(
                "ACT_ID_REUSED",
                "this act id was recorded with another patient or act; an act id names one act",
            )
        return billing_pb2.RecordActResponse(
            charges=await self._store.charges_of_act(request.act_id, tx=tx),
            quote=billing_pb2.Quote.FromString(recorded_quote),
        )

    async def ReverseCharge(
        self, request: billing_pb2.ReverseChargeRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ReverseChargeResponse:
        principal = current_principal()
        charge_id = uuid.UUID(request.name.removeprefix("charges/"))
        request_id = uuid.UUID(request.request_id)
        audit_target(resource=request.name)
        call = Call.of(request, "ReverseCharge", principal)
        async with self._store.transaction() as tx:
            done = await LEDGER.claim(tx, call)
            await self._store.lock(tx, f"charge:{charge_id}")
            if done is not None:
                # A retry of this very reversal: what it wrote, as it stands.
                previous = await self._store.get_charge(names.CHARGE.parse_uuid(done.resource, "name"), tx=tx)
                original = await self._store.get_charge(charge_id, tx=tx)
                assert previous is not None
                assert original is not None
                audit_target(patient=original.charge.patient)
                return billing_pb2.ReverseChargeResponse(reversal=previous.charge, charge=original.charge)
            stored = await self._store.get_charge(charge_id, tx=tx)
            if stored is None or not _may_see(principal, stored.charge):
                if stored is None and _unrestricted(principal):
                    raise NotFound("CHARGE_NOT_FOUND", f"no charge {request.name}")
                raise _not_visible()
            charge, row = stored.charge, stored.row
            audit_target(patient=charge.patient)
            if charge.kind != billing_pb2.Charge.KIND_CHARGE:
                raise FailedPrecondition("NOT_REVERSIBLE", "a reversal line cannot be reversed")
            if charge.reversed_by:
                raise FailedPrecondition(
                    "CHARGE_ALREADY_REVERSED", f"already reversed by {charge.reversed_by}"
                )
            (reversal,) = await self._store.insert_charges(
                tx,
                [
                    ChargeRow(
                        kind="KIND_REVERSAL",
                        act_id=row["act_id"],
                        line=row["line"],
                        code=row["code"],
                        label=row["label"],
                        biller_role=row["biller_role"],
                        practitioner_rpps=row["practitioner_rpps"],
                        exploitant=row["exploitant"],
                        establishment=row["establishment"],
                        patient_id=row["patient_id"],
                        act_type=row["act_type"],
                        act_time=row["act_time"],
                        act_date=row["act_date"],
                        amount_cents=-row["amount_cents"],
                        extra_fee_cents=-row["extra_fee_cents"],
                        reimbursement_rate_bp=row["reimbursement_rate_bp"],
                        reimbursement_cents=-row["reimbursement_cents"],
                        participation_cents=-row["participation_cents"],
                        overseas=row["overseas"],
                        catalog_entry=row["catalog_entry"],
                        catalog_version=row["catalog_version"],
                        unconfirmed=row["unconfirmed"],
                        quota_key=row["quota_key"],
                        quota_slot=None,
                        counts_toward_remote_cap=row["counts_toward_remote_cap"],
                        reverses=charge_id,
                        reversal_reason=_enum_name(billing_pb2.ReversalReason, request.reason),
                        reversal_note=request.note or None,
                        request_id=request_id,
                        region_code=row["region_code"],
                        ght_id=row["ght_id"],
                        prescriber_rpps=row["prescriber_rpps"],
                    )
                ],
            )
            if row["quota_key"]:
                # The reversed act no longer uses its slot.
                await self._store.release_quota_slot(tx, row["quota_key"])
            await LEDGER.record(tx, call, [reversal.name])
            updated = await self._store.get_charge(charge_id, tx=tx)
        assert updated is not None
        return billing_pb2.ReverseChargeResponse(reversal=reversal, charge=updated.charge)

    # --- reading the ledger ---

    async def GetCharge(
        self, request: billing_pb2.GetChargeRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetChargeResponse:
        principal = current_principal()
        audit_target(resource=request.name)
        stored = await self._store.get_charge(uuid.UUID(request.name.removeprefix("charges/")))
        if stored is None or not _may_see(principal, stored.charge):
            if stored is None and _unrestricted(principal):
                raise NotFound("CHARGE_NOT_FOUND", f"no charge {request.name}")
            raise _not_visible()
        audit_target(patient=stored.charge.patient)
        return billing_pb2.GetChargeResponse(charge=stored.charge)

    async def ListCharges(
        self, request: billing_pb2.ListChargesRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ListChargesResponse:
        principal = current_principal()
        # Named first, so that a refused attempt at a patient's charges is audited with the patient.
        audit_target(resource="charges", patient=request.patient)
        practitioner, establishment = _scope(principal, request.practitioner, request.establishment)
        audit_target(resource=establishment or practitioner or "charges")
        start, end = _period(request.start_date, request.end_date)
        filters: dict[str, object] = {
            "practitioner": practitioner,
            "establishment": establishment,
            "patient": request.patient,
            "start": start.isoformat(),
            "end": end.isoformat(),
        }
        token = decode_token(request.page_token, filters)
        after = None
        if token is not None:
            instant, _, seq = token.rpartition("|")
            try:
                after = (datetime.fromisoformat(instant), int(seq))
            except ValueError:
                raise InvalidArgument.one("page_token", "is not a token this service issued") from None
        charges, next_key = await self._store.list_charges(
            _filter(start, end, practitioner, establishment, request.patient),
            page_size(request.page_size),
            after,
        )
        audit_patients(c.patient for c in charges)
        return billing_pb2.ListChargesResponse(
            charges=charges,
            next_page_token=(
                encode_token(f"{next_key[0].isoformat()}|{next_key[1]}", filters) if next_key else ""
            ),
        )

    async def ExportCharges(
        self, request: billing_pb2.ExportChargesRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ExportChargesResponse:
        principal = current_principal()
        practitioner, establishment = _scope(principal, request.practitioner, request.establishment)
        audit_target(resource=establishment or practitioner or "charges")
        start, end = _period(request.start_date, request.end_date)
        if (end - start).days + 1 > MAX_EXPORT_DAYS:
            raise InvalidArgument.one("end_date", f"an export covers at most {MAX_EXPORT_DAYS} days")
        charges = await self._store.export_charges(
            _filter(start, end, practitioner, establishment, ""), MAX_EXPORT_LINES
        )
        if len(charges) > MAX_EXPORT_LINES:
            raise FailedPrecondition(
                "EXPORT_TOO_LARGE", f"more than {MAX_EXPORT_LINES} lines: export a shorter period"
            )
        audit_patients(c.patient for c in charges)
        scope = (establishment or practitioner or "all").replace("/", "-")
        stem = f"charges-{scope}-{start.isoformat()}-{end.isoformat()}"
        if request.format == billing_pb2.EXPORT_FORMAT_CSV:
            content, content_type, filename = export.to_csv(charges), "text/csv; charset=utf-8", f"{stem}.csv"
        else:
            content, content_type = export.to_fhir_bundle(charges), "application/fhir+json"
            filename = f"{stem}.fhir.json"
        return billing_pb2.ExportChargesResponse(
            content=content, content_type=content_type, filename=filename, line_count=len(charges)
        )

    # --- activity report ---

    async def GetBillingActivityReport(
        self, request: billing_pb2.GetBillingActivityReportRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetBillingActivityReportResponse:
        principal = current_principal()
        region = names.REGION.parse_optional(request.region, "region")
        ght = names.GHT.parse_optional(request.ght, "ght")
        caller_ght = None
        if principal.establishment:
            caller_ght = names.GHT.parse_optional(
                await self._directory.ght_of(principal.establishment) or "", "ght"
            )
        scope = reports.scope_of(principal, caller_ght, region, ght)
        filters: dict[str, object] = {
            "start": f"{request.start_month.year}-{request.start_month.month}",
            "end": f"{request.end_month.year}-{request.end_month.month}",
            "region": request.region,
            "ght": request.ght,
            "act_type": request.act_type,
        }
        after = reports.parse_key(decode_token(request.page_token, filters))
        size = page_size(request.page_size)
        rows = await self._store.activity_report(
            scope,
            reports.first_day(request.start_month),
            reports.first_day(request.end_month),
            region=region,
            ght=ght,
            act_type=_enum_name(billing_pb2.ActType, request.act_type) if request.act_type else None,
            limit=size + 1,
            after=after,
        )
        page, last = split_page(rows, size)
        return billing_pb2.GetBillingActivityReportResponse(
            rows=[_activity(r) for r in page],
            next_page_token=next_page_token(
                reports.key_token(last["month"], last["region_code"], last["ght"], last["code"])
                if last is not None
                else None,
                filters,
            ),
        )


def _activity(row: asyncpg.Record) -> billing_pb2.BillingActivity:
    activity = billing_pb2.BillingActivity(
        region=f"regions/{row['region_code']}" if row["region_code"] else "",
        ght=f"ghts/{row['ght']}" if row["ght"] else "",
        month=reports.month_message(row["month"]),
        code=row["code"],
        charges=row["charges"],
        reversals=row["reversals"],
        count=row["charges"] - row["reversals"],
    )
    money(int(row["amount_cents"]), activity.amount)
    return activity


def _filter(start: date, end: date, practitioner: str, establishment: str, patient: str) -> ChargeFilter:
    return ChargeFilter(
        start=start,
        end=end,
        practitioner_rpps=practitioner.removeprefix("practitioners/") or None,
        establishment=establishment.removeprefix("establishments/") or None,
        patient_id=uuid.UUID(patient.removeprefix("patients/")) if patient else None,
    )


__all__ = ["CATALOG", "SERVICE_NAME", "BillingServicer", "act_from_request"]
