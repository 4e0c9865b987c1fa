"""The billing rule engine: pure functions from a described act to what it bills and why.

    needs = rules.needs(act, catalog)          # which facts of the past the act's rules depend on
    facts = ...                                # the servicer reads them (quota counters, ledger, contracts)
    quote = rules.quote(act, catalog, facts)   # lines, refusals, warnings, every rule applied

Nothing here does I/O, reads a clock or a global: the same act, catalog and facts give the same quote, so the
rules are tested as a table and the servicer only gathers facts and writes lines.

Dates (§7.14). Every dated value (tariff, rate, participation, quota, cap, limit, parcours rule) is chosen by
the act's local civil date where it took place: its instant read in the time zone of the act's region
(services/kit/regions.py). An act at 01:00 on 1 January in La Réunion is a 1 January act although it is still
31 December in Paris; one at 23:30 on 31 December in Guyane is a 31 December act although Paris is already in
the new year. Yearly quotas and the remote-activity cap count calendar years of that date, monthly quotas
calendar months.

Facts the caller gives (the hub does not see in-person care): the performer's activity of the year
(`ActivityToDate`, for the remote-activity cap) and the patient's care by the performer over the alternance
window (`CareWithPerformer`). The ledger gives floors for both: remote acts the hub recorded itself.

Each rule cites the rule of the domain reference it implements (`§7.n` of french-telemedicine.md) and
says where the fact comes from (the catalog entry's or parameter's source). Refusals and warnings carry
stable UPPER_SNAKE reasons (class `Reason`). An act-level refusal (e.g. MEDICAL_PROFESSIONAL_REQUIRED)
leaves no line; a line-level one (e.g. TELEEXPERTISE_QUOTA_EXCEEDED on TE2) removes that line only: each side
of a téléexpertise bills on its own. A prescription-level one (SICK_LEAVE_OVER_LIMIT, §7.16) refuses the
prescription and leaves the act billable: the limit is on the arrêt, not on the consultation.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from services.billing.catalog import BillerRule, Catalog, Entry, Parameter
from services.billing.contracts import Activity, ActivityKind, ContractDecision, Requirement
from services.kit.regions import region_zone

# The civil time zone of metropolitan regions (Corse included), and of GetCatalog's "today".
TARIFF_ZONE = ZoneInfo("Europe/Paris")
ARCHITECTURE = "ARCHITECTURE §5"

PHYSICIAN = "PROFESSION_PHYSICIAN"
MIDWIFE = "PROFESSION_MIDWIFE"
DENTIST = "PROFESSION_DENTIST"
NURSE = "PROFESSION_NURSE"
PHYSIOTHERAPIST = "PROFESSION_PHYSIOTHERAPIST"
# L.6316-1 CSP: the three medical professions.
MEDICAL_PROFESSIONS = frozenset({PHYSICIAN, MIDWIFE, DENTIST})
# L.6316-2 CSP: télésoin is for pharmacists and auxiliaires médicaux.
TELESOIN_PROFESSIONS = frozenset(
    {
        "PROFESSION_PHARMACIST",
        NURSE,
        PHYSIOTHERAPIST,
        "PROFESSION_SPEECH_THERAPIST",
        "PROFESSION_ORTHOPTIST",
        "PROFESSION_PODIATRIST",
        "PROFESSION_OCCUPATIONAL_THERAPIST",
        "PROFESSION_PSYCHOMOTOR_THERAPIST",
        "PROFESSION_DIETITIAN",
        "PROFESSION_RADIOGRAPHER",
        "PROFESSION_AUDIOPROSTHETIST",
        "PROFESSION_OPTICIAN",
        "PROFESSION_LABORATORY_TECHNICIAN",
        "PROFESSION_ORTHOTIST_PROSTHETIST",
    }
)
# Télésoin needing a prior in-person contact (§7.11): physiotherapists (12 months), nurses (patient known).
TELESOIN_PRIOR_VISIT = frozenset({PHYSIOTHERAPIST, NURSE})
# ARS regions in a DROM (INSEE codes): Guadeloupe, Martinique, Guyane, La Réunion, Mayotte.
DROM_REGIONS = frozenset({"01", "02", "03", "04", "06"})

TELECONSULTATION = "ACT_TYPE_TELECONSULTATION"
TELEEXPERTISE = "ACT_TYPE_TELEEXPERTISE"
TELESURVEILLANCE = "ACT_TYPE_TELESURVEILLANCE"
TELEASSISTANCE = "ACT_TYPE_TELEASSISTANCE"
REGULATION = "ACT_TYPE_REGULATION"
TELESOIN = "ACT_TYPE_TELESOIN"
TELECONSEIL = "ACT_TYPE_TELECONSEIL"

PERFORMER = "BILLER_ROLE_PERFORMER"
REQUESTER = "BILLER_ROLE_REQUESTER"
ASSISTANT = "BILLER_ROLE_ASSISTANT"
EXPLOITANT = "BILLER_ROLE_EXPLOITANT"

SECTOR_2 = "CONVENTION_SECTOR_2"
PSYCHIATRY = "SPECIALTY_PSYCHIATRY"
# Values of the parameter `remote_cap.excluded`.
TREATING_PHYSICIAN_OWN_PATIENTS = "TREATING_PHYSICIAN_OWN_PATIENTS"
# Values of the parameter `parcours.territoriality_exception_zones`: any zone of insufficient supply or
# difficult access (ZIP or ZAC), or ZIP only.
UNDERSERVED = "UNDERSERVED"
ZIP = "ZIP"


class Reason:
    """Stable reasons of refusals and warnings (part of the API: never renamed)."""

    # Refusals of the whole act.
    NOT_A_BILLABLE_ACT = "NOT_A_BILLABLE_ACT"
    NO_CATALOG_ENTRY = "NO_CATALOG_ENTRY"
    MEDICAL_PROFESSIONAL_REQUIRED = "MEDICAL_PROFESSIONAL_REQUIRED"
    TELESOIN_PROFESSIONAL_REQUIRED = "TELESOIN_PROFESSIONAL_REQUIRED"
    SICK_LEAVE_OVER_LIMIT = "SICK_LEAVE_OVER_LIMIT"
    PRIOR_IN_PERSON_VISIT_REQUIRED = "PRIOR_IN_PERSON_VISIT_REQUIRED"
    REQUIRES_CONTRACT = "REQUIRES_CONTRACT"
    REQUIRES_OPERATOR_DECLARATION = "REQUIRES_OPERATOR_DECLARATION"
    # The contracts service's other refusals (services/billing/contracts.py: CheckCoverage).
    REQUIRES_ORDINAL_VISA = "REQUIRES_ORDINAL_VISA"
    REQUIRES_AGREMENT = "REQUIRES_AGREMENT"
    # Refusals of a line.
    NO_TARIFF_AT_DATE = "NO_TARIFF_AT_DATE"
    NOT_BILLABLE_BY_PROFESSION = "NOT_BILLABLE_BY_PROFESSION"
    NOT_BILLABLE_BY_SECTOR = "NOT_BILLABLE_BY_SECTOR"
    TELEEXPERTISE_QUOTA_EXCEEDED = "TELEEXPERTISE_QUOTA_EXCEEDED"
    TELESURVEILLANCE_FORFAIT_ALREADY_BILLED = "TELESURVEILLANCE_FORFAIT_ALREADY_BILLED"
    NOT_CUMULABLE = "NOT_CUMULABLE"
    DEPASSEMENT_NOT_ALLOWED = "DEPASSEMENT_NOT_ALLOWED"
    DEVICE_NOT_LISTED = "DEVICE_NOT_LISTED"
    # Warnings.
    REMOTE_CAP_EXCEEDED = "REMOTE_CAP_EXCEEDED"
    ALTERNANCE_NOT_OBSERVED = "ALTERNANCE_NOT_OBSERVED"
    OUTSIDE_PARCOURS = "OUTSIDE_PARCOURS"
    QUOTA_NOT_EVALUATED = "QUOTA_NOT_EVALUATED"
    UNCONFIRMED_VALUE = "UNCONFIRMED_VALUE"


# The refusal of a full quota, by quota name.
QUOTA_REFUSALS: Mapping[str, str] = {
    "teleexpertise": Reason.TELEEXPERTISE_QUOTA_EXCEEDED,
    "telesurveillance_operator": Reason.TELESURVEILLANCE_FORFAIT_ALREADY_BILLED,
    "telesurveillance_technical": Reason.TELESURVEILLANCE_FORFAIT_ALREADY_BILLED,
}


# --- The act ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Participant:
    practitioner: str  # practitioners/{rpps}
    profession: str  # Profession NAME
    specialty: str  # Specialty NAME
    sector: str  # ConventionSector NAME
    establishment: str  # establishments/{finess} where this participant's line is billed
    overseas: bool


@dataclass(frozen=True)
class Circumstances:
    oriented_by_treating_physician: bool = False
    performer_is_treating_physician: bool = False
    emergency: bool = False
    no_available_treating_physician: bool = False
    care_home_resident: bool = False
    prisoner: bool = False
    zip_resident: bool = False
    sas_orientation: bool = False
    performer_in_patient_territory: bool = False
    long_term_condition: bool = False
    patient_seen_in_person: bool = False
    performer_is_referent_midwife: bool = False
    # A zone of insufficient supply or difficult access (ZIP or ZAC); `zip_resident` implies it.
    underserved_zone_resident: bool = False
    # §7.11 télésoin: the performer's last in-person act with the patient, and a hospital discharge the
    # télésoin follows (the physiotherapist's exception), when given.
    last_in_person_visit_date: date | None = None
    hospital_discharge_date: date | None = None


@dataclass(frozen=True)
class SickLeave:
    days: int
    ongoing_days: int = 0
    in_person_impossible_justified: bool = False


@dataclass(frozen=True)
class Telesurveillance:
    operator_level: str = ""  # OperatorLevel NAME or ''
    technical_forfait: str = ""  # TechnicalForfait NAME or ''
    device_listed: bool = False
    exploitant: str = ""  # SIREN


@dataclass(frozen=True)
class ActivityToDate:
    """The performer's activity of the calendar year so far, this act excluded (the caller's figures)."""

    conventioned_acts: int
    # Every téléconsultation (télésoin act for a nurse), those to own patients as médecin traitant included.
    teleconsultations: int
    teleexpertises: int = 0
    own_patient_teleconsultations: int = 0


@dataclass(frozen=True)
class CareWithPerformer:
    """The patient's care by the performer over the alternance window, this act excluded (the caller's)."""

    in_person_acts: int
    remote_acts: int


@dataclass(frozen=True)
class Act:
    act_type: str  # ActType NAME
    act_time: datetime  # aware
    establishment: str  # establishments/{finess}
    region: str  # INSEE region code
    performer: Participant
    patient_age: int
    patient: str = ""  # patients/{uuid}, '' when unknown (quotas are then not evaluated)
    requester: Participant | None = None
    assistant: Participant | None = None
    assistance_setting: str = ""
    circumstances: Circumstances = field(default_factory=Circumstances)
    sick_leave: SickLeave | None = None
    telesurveillance: Telesurveillance | None = None
    additional_codes: tuple[str, ...] = ()
    extra_fee_cents: int = 0
    performer_activity: ActivityToDate | None = None
    care_with_performer: CareWithPerformer | None = None
    # The téléconsultation company employing the performer, `teleconsultationCompanies/{siren}` ('' none).
    teleconsultation_company: str = ""

    @property
    def time_zone(self) -> ZoneInfo:
        return place_zone(self.region)

    @property
    def act_date(self) -> date:
        return tariff_date(self.act_time, self.region)


def place_zone(region: str) -> ZoneInfo:
    """The civil time zone of an ARS region (INSEE code): a DROM's own, else Europe/Paris."""
    return region_zone(region)


def tariff_date(instant: datetime, region: str) -> date:
    """The date that chooses tariffs and parameters (§7.14): the act's civil date in its region."""
    if instant.tzinfo is None:
        raise ValueError("act_time must be timezone-aware")
    return instant.astimezone(place_zone(region)).date()


# --- What a quote says --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    reason: str
    message: str
    reference: str
    source: str = ""
    code: str = ""


@dataclass(frozen=True)
class AppliedRule:
    rule: str
    reference: str
    reason: str
    source: str = ""
    code: str = ""
    confirmed: bool = True


@dataclass(frozen=True)
class QuotaClaim:
    """A slot the line takes in a quota counter when recorded."""

    quota: str
    key: str
    max: int
    used: int  # slots used before this act, as the quote saw them

    @property
    def refusal(self) -> str:
        return QUOTA_REFUSALS.get(self.quota, Reason.TELEEXPERTISE_QUOTA_EXCEEDED)


@dataclass
class Line:
    """A billable line of a quote."""

    entry: Entry
    biller_role: str
    practitioner: str  # practitioners/{rpps}, '' for an exploitant
    exploitant: str
    establishment: str
    overseas: bool
    amount_cents: int
    extra_fee_cents: int = 0
    rate_bp: int = 0
    reimbursement_cents: int = 0
    participation_cents: int = 0
    quota: QuotaClaim | None = None
    counts_toward_remote_cap: bool = False
    # An assistant's line (§7.18): the teleconsultant, `practitioners/{rpps}`, in the prescriber field; the
    # act's date is the prescription and execution date.
    prescriber: str = ""
    # What is unconfirmed among the values this line uses (empty: every value is confirmed).
    unconfirmed_values: list[str] = field(default_factory=list)

    @property
    def code(self) -> str:
        return self.entry.code

    @property
    def unconfirmed(self) -> bool:
        return bool(self.unconfirmed_values)

    def mark_unconfirmed(self, what: str) -> None:
        if what not in self.unconfirmed_values:
            self.unconfirmed_values.append(what)


@dataclass
class Quote:
    act_date: date
    catalog_version: str
    lines: list[Line] = field(default_factory=list)
    refusals: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    applied: list[AppliedRule] = field(default_factory=list)
    unconfirmed: bool = False
    # Prescriptions refused or flagged while the act stays billable (§7.16).
    prescription_refusals: list[Finding] = field(default_factory=list)

    @property
    def billable(self) -> bool:
        return bool(self.lines)

    @property
    def total_cents(self) -> int:
        return sum(line.amount_cents + line.extra_fee_cents for line in self.lines)

    @property
    def total_reimbursement_cents(self) -> int:
        return sum(line.reimbursement_cents for line in self.lines)

    def refuse_line(self, line: Line, finding: Finding) -> None:
        """Take a line out (a quota found full when recording), saying why."""
        self.lines.remove(line)
        self.refusals.append(finding)


# --- Facts of the past --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What the rules need to know beyond the act: read by the servicer."""

    # Slots used per quota counter key.
    quota_used: Mapping[str, int] = field(default_factory=dict)
    # Remote acts counted by the remote cap that the hub recorded for the performer this calendar year.
    remote_recorded: int = 0
    # Téléconsultations the hub recorded for the performer and the patient over the alternance window.
    pair_remote_recorded: int = 0
    # The contract policy's answer for `Needs.contract_activity`.
    contract: ContractDecision | None = None


@dataclass(frozen=True)
class PairWindow:
    """The téléconsultations of one practitioner to one patient over a period (both days included)."""

    rpps: str
    patient: str  # patients/{uuid}
    start: date
    end: date


@dataclass(frozen=True)
class Needs:
    quota_keys: tuple[str, ...]
    # (rpps, calendar year) whose recorded remote acts the cap needs.
    remote_cap: tuple[str, int] | None
    contract_activity: Activity | None
    # The pair whose recorded téléconsultations the alternance needs.
    alternance: PairWindow | None = None


# --- Helpers ------------------------------------------------------------------------------------------------


def euros(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d} €"


def percent(bp: int) -> str:
    return f"{bp / 100:g} %"


def _short(name: str, prefix: str) -> str:
    return name.removeprefix(prefix)


def quota_key(quota: str, mode: str, role: str, biller: str, patient: str, day: date) -> str:
    """The counter a line counts in. Modes come from the dated parameter `quota.{quota}.key`."""
    who = biller if mode.startswith("biller_") else "*"
    period = f"{day.year}" if mode.endswith("_year") else f"{day.year}-{day.month:02d}"
    return f"{quota}|{_short(role, 'BILLER_ROLE_')}|{who}|{patient}|{period}"


@dataclass(frozen=True)
class ParcoursDecision:
    """§7.10: whether a téléconsultation is within the parcours de soins, why, and on what source."""

    inside: bool
    why: str
    source: str
    confirmed: bool = True


def _items(parameter: Parameter, prefix: str = "") -> frozenset[str]:
    """The comma-separated items of a text parameter, each with `prefix` (an enum's)."""
    return frozenset(f"{prefix}{item.strip()}" for item in parameter.text.split(",") if item.strip())


def in_parcours(act: Act, catalog: Catalog) -> ParcoursDecision:
    """§7.10: whether the téléconsultation is within the parcours de soins, or which exception applies."""
    c = act.circumstances
    day = act.act_date
    source = "Convention médicale 2024 arts 87-90; ameli 'organisations coordonnées territoriales' (H)"
    if c.performer_is_treating_physician:
        return ParcoursDecision(True, "the teleconsultant is the patient's médecin traitant", source)
    if c.oriented_by_treating_physician:
        return ParcoursDecision(True, "oriented by the patient's médecin traitant", source)
    specialty = act.performer.specialty
    name = _short(specialty, "SPECIALTY_").lower()
    direct = catalog.parameter("parcours.direct_access_specialties", day)
    if direct is not None and specialty in _items(direct, "SPECIALTY_"):
        return ParcoursDecision(
            True, f"exception: direct-access specialty ({name})", direct.source, direct.confirmed
        )
    # Psychiatry and neuropsychiatry: direct access only for patients aged 16 to 25 (corrected §3.2).
    not_by_age = ""
    by_age = catalog.parameter("parcours.direct_access_by_age.specialties", day)
    low = catalog.parameter("parcours.direct_access_by_age.min_age", day)
    high = catalog.parameter("parcours.direct_access_by_age.max_age", day)
    age_limited = by_age is not None and specialty in _items(by_age, "SPECIALTY_")
    if by_age is not None and low is not None and high is not None and age_limited:
        ages = f"aged {low.number} to {high.number}"
        confirmed = by_age.confirmed and low.confirmed and high.confirmed
        if low.number <= act.patient_age <= high.number:
            return ParcoursDecision(
                True,
                f"exception: direct access to {name} for a patient {ages} (patient aged {act.patient_age})",
                f"{by_age.source}; {low.source}; {high.source}",
                confirmed,
            )
        not_by_age = f"direct access to {name} is for patients {ages} only (patient aged {act.patient_age})"
    below = catalog.parameter("parcours.exception_below_age", day)
    if below is not None and act.patient_age < below.number:
        under = f"exception: patient under {below.number}"
        return ParcoursDecision(True, under, below.source, below.confirmed)
    if c.emergency:
        return ParcoursDecision(True, "exception: emergency", source)
    if c.prisoner:
        return ParcoursDecision(True, "exception: prisoner", source)
    if c.care_home_resident:
        return ParcoursDecision(
            True, "exception: resident of an EHPAD or a facility for disabled adults", source
        )
    if c.sas_orientation:
        return ParcoursDecision(
            True, "exception: oriented by the SAS regulator (lifts knowledge and territoriality)", source
        )
    if c.no_available_treating_physician:
        return _territoriality(act, catalog, source)
    return ParcoursDecision(
        False, not_by_age or "not oriented by the médecin traitant and no exception applies", source
    )


def _territoriality(act: Act, catalog: Catalog, source: str) -> ParcoursDecision:
    """No médecin traitant available: within the parcours if territoriality holds or the zone lifts it."""
    c = act.circumstances
    if c.performer_in_patient_territory:
        why = "exception: no médecin traitant available, teleconsultant of the patient's territory"
        return ParcoursDecision(True, why, source)
    zones = catalog.parameter("parcours.territoriality_exception_zones", act.act_date)
    allowed = _items(zones) if zones is not None else frozenset()
    zone_source = zones.source if zones is not None else source
    confirmed = zones.confirmed if zones is not None else True
    if c.zip_resident and allowed & {ZIP, UNDERSERVED}:
        return ParcoursDecision(
            True, "exception: no médecin traitant available, patient living in a ZIP", zone_source, confirmed
        )
    if c.underserved_zone_resident and UNDERSERVED in allowed:
        return ParcoursDecision(
            True,
            "exception: no médecin traitant available, patient living in an under-served zone (before the "
            "2024 convention, any under-served zone lifted territoriality)",
            zone_source,
            confirmed,
        )
    if c.underserved_zone_resident:
        why = (
            "no médecin traitant available and the teleconsultant is outside the patient's territory: the "
            "patient lives in an under-served zone that is not a ZIP, and since the 2024 convention only a "
            "ZIP lifts territoriality"
        )
    else:
        why = (
            "no médecin traitant available, but the teleconsultant is outside the patient's territory and "
            "the patient does not live in a ZIP (territoriality)"
        )
    return ParcoursDecision(False, why, zone_source, confirmed)


def _rule_matches(rule: BillerRule, who: Participant, act: Act, day: date) -> bool:
    return (
        rule.profession == who.profession
        and (not rule.specialties or who.specialty in rule.specialties)
        and who.specialty not in rule.excluded_specialties
        and (not rule.sectors or who.sector in rule.sectors)
        and (rule.effective_from is None or rule.effective_from <= day)
        and _condition_holds(rule.condition, act)
    )


def _condition_holds(condition: str, act: Act) -> bool:
    if not condition:
        return True
    if condition == "care_home_resident":
        return act.circumstances.care_home_resident
    if condition == "performer_is_physician":
        return act.performer.profession == PHYSICIAN
    return False


_CONDITION_TEXT = {
    "care_home_resident": "only for a patient living in an EHPAD or a facility for disabled adults",
    "performer_is_physician": "only when asking a physician",
}


# --- The evaluation -----------------------------------------------------------------------------------------


class _Evaluation:
    def __init__(self, act: Act, catalog: Catalog, facts: Facts) -> None:
        self.act = act
        self.catalog = catalog
        self.facts = facts
        self.day = act.act_date
        self.q = Quote(act_date=self.day, catalog_version=catalog.version)
        self.outside_parcours = False

    # --- recording findings ---

    def applied(
        self, rule: str, reference: str, reason: str, source: str = "", code: str = "", confirmed: bool = True
    ) -> None:
        self.q.applied.append(AppliedRule(rule, reference, reason, source, code, confirmed))
        if not confirmed:
            self.q.unconfirmed = True

    def refuse(self, reason: str, message: str, reference: str, source: str = "", code: str = "") -> None:
        self.q.refusals.append(Finding(reason, message, reference, source, code))

    def warn(self, reason: str, message: str, reference: str, source: str = "", code: str = "") -> None:
        self.q.warnings.append(Finding(reason, message, reference, source, code))

    def param(self, name: str) -> Parameter | None:
        return self.catalog.parameter(name, self.day)

    # --- the act as a whole ---

    def run(self) -> Quote:
        act = self.act
        local = act.act_time.astimezone(act.time_zone)
        self.applied(
            "TARIFF_DATE",
            "§7.14",
            f"act at {local.isoformat()} in {act.time_zone.key} (region {act.region}, where it took place) "
            f"is dated {self.day.isoformat()}: tariffs and parameters in force that day apply, and yearly "
            f"counts are of {self.day.year} (catalog {self.catalog.version})",
            "domain reference §7.14: the act's local civil date where it took place",
        )
        if not self._billable_act_type() or not self._professions():
            return self.q
        self._sick_leave()
        self._prior_visit()
        if act.act_type == TELECONSULTATION:
            self._parcours()
        if act.act_type == TELESURVEILLANCE:
            self._operator_declaration()
        if self.q.refusals:
            return self.q
        self._lines()
        for line in list(self.q.lines):
            self._price(line)
        self._extra_fee()
        self._additional_codes()
        for line in list(self.q.lines):
            self._quota(line)
            if line in self.q.lines:
                self._remote_cap(line)
        self._alternance()
        self._unconfirmed_warnings()
        return self.q

    def _billable_act_type(self) -> bool:
        act_type = self.act.act_type
        if act_type == TELECONSEIL:
            self.refuse(
                Reason.NOT_A_BILLABLE_ACT,
                "téléconseil is not one of the five télémédecine acts of R.6316-1 CSP nor télésoin: "
                "it is never billed as an act",
                "§7.1",
                "R.6316-1 CSP; L.6316-2 CSP; lexing.law (2014); CNOM 2016 (H)",
            )
            return False
        if act_type in (TELEASSISTANCE, REGULATION):
            what = "téléassistance" if act_type == TELEASSISTANCE else "régulation"
            self.refuse(
                Reason.NO_CATALOG_ENTRY,
                f"no reimbursement code is known for {what} (régulation is funded through SAMU/SAS)",
                "§3.7",
                "domain reference §3.7: codes unconfirmed",
            )
            return False
        self.applied(
            "ACT_TYPE", "§7.1", f"{_short(act_type, 'ACT_TYPE_').lower()} is a billable telehealth act"
        )
        return True

    def _professions(self) -> bool:
        act = self.act
        performer = act.performer.profession
        source = "L.6316-1 and R.6316-1 CSP; décret 2021-707 (H)"
        if act.act_type in (TELECONSULTATION, TELEEXPERTISE, TELESURVEILLANCE):
            if performer not in MEDICAL_PROFESSIONS:
                who = {
                    TELECONSULTATION: "a téléconsultation is given by",
                    TELEEXPERTISE: "the expert (requis) of a téléexpertise must be",
                    TELESURVEILLANCE: "télésurveillance is interpreted by",
                }[act.act_type]
                self.refuse(
                    Reason.MEDICAL_PROFESSIONAL_REQUIRED,
                    f"{who} a professionnel médical (physician, midwife or dentist)",
                    "§7.2",
                    source,
                )
                return False
            self.applied("MEDICAL_PROFESSIONAL", "§7.2", "the performer is a professionnel médical", source)
        if act.act_type == TELESOIN:
            if performer not in TELESOIN_PROFESSIONS:
                self.refuse(
                    Reason.TELESOIN_PROFESSIONAL_REQUIRED,
                    "télésoin is performed by pharmacists and auxiliaires médicaux (a physician's "
                    "remote act is a téléconsultation)",
                    "§7.2",
                    "L.6316-2 CSP; arrêté of 3 June 2021 (H)",
                )
                return False
            self.applied(
                "TELESOIN_PROFESSIONAL",
                "§7.2",
                "the performer is a pharmacist or an auxiliaire médical",
                source,
            )
        return True

    def _sick_leave(self) -> None:
        leave = self.act.sick_leave
        if leave is None:
            return
        limit = self.param("sick_leave.remote_max_days")
        if limit is None:
            self.applied(
                "SICK_LEAVE_LIMIT", "§7.16", "no limit on remote sick leave was in force on the act date"
            )
            return
        total = leave.ongoing_days + leave.days
        c = self.act.circumstances
        exempt = ""
        if c.performer_is_treating_physician:
            exempt = "prescribed by the patient's médecin traitant"
        elif c.performer_is_referent_midwife:
            exempt = "prescribed by the patient's sage-femme référente"
        elif leave.in_person_impossible_justified:
            exempt = "the patient's impossibility to see a doctor in person is justified"
        if total <= limit.number:
            self.applied(
                "SICK_LEAVE_LIMIT",
                "§7.16",
                f"arrêt de travail of {total} day(s) in all, within the {limit.number}-day limit",
                limit.source,
                confirmed=limit.confirmed,
            )
        elif exempt:
            self.applied(
                "SICK_LEAVE_LIMIT",
                "§7.16",
                f"arrêt de travail of {total} day(s) in all beyond {limit.number} days allowed: {exempt}",
                limit.source,
                confirmed=limit.confirmed,
            )
        else:
            # The arrêt is refused, not the téléconsultation (§7.16): the act's lines are still quoted.
            self.q.prescription_refusals.append(
                Finding(
                    Reason.SICK_LEAVE_OVER_LIMIT,
                    f"an arrêt de travail prescribed or renewed remotely may not exceed {limit.number} days "
                    f"nor bring an ongoing one beyond {limit.number} days ({total} asked) unless the "
                    "prescriber is the médecin traitant or the sage-femme référente, or the impossibility to "
                    "consult in person is justified; the téléconsultation itself stays billable",
                    "§7.16",
                    limit.source,
                )
            )
            self.applied(
                "SICK_LEAVE_LIMIT",
                "§7.16",
                f"arrêt de travail of {total} day(s) in all refused beyond {limit.number} days: the "
                "téléconsultation stays billable",
                limit.source,
                confirmed=limit.confirmed,
            )

    def _prior_visit(self) -> None:
        act = self.act
        profession = act.performer.profession
        needed = (act.act_type == TELECONSULTATION and profession == MIDWIFE) or (
            act.act_type == TELESOIN and profession in TELESOIN_PRIOR_VISIT
        )
        source = "avenant 9 (TLC, 2021-2022); ameli.fr MK télésoin (17/09/2024); avenant 5 sages-femmes (H/M)"
        if act.act_type == TELECONSULTATION and profession == PHYSICIAN:
            self._physician_prior_visit(source)
            return
        if act.act_type == TELESOIN and profession == PHYSIOTHERAPIST:
            self._physiotherapist_prior_visit()
            return
        if not needed:
            return
        who = _short(profession, "PROFESSION_").lower()
        if act.circumstances.patient_seen_in_person:
            self.applied(
                "PRIOR_IN_PERSON_VISIT",
                "§7.11",
                f"the {who} has seen the patient in person within the previous 12 months",
                source,
            )
        else:
            self.refuse(
                Reason.PRIOR_IN_PERSON_VISIT_REQUIRED,
                f"a remote act by a {who} needs the patient to have been seen in person within the "
                "previous 12 months (known to the nurse)",
                "§7.11",
                source,
            )

    def _physiotherapist_prior_visit(self) -> None:
        """§7.11: a physiotherapist's télésoin needs an in-person act with the patient within the previous
        `prior_visit.physiotherapist_telesoin_months` months (the day that many months before the act date
        included), unless it follows a hospital discharge within
        `prior_visit.physiotherapist_discharge_months` (the exception; its window is unconfirmed). Both are
        dated parameters. Without a visit date, `patient_seen_in_person` is the performer's attestation."""
        c = self.act.circumstances
        months = self.param("prior_visit.physiotherapist_telesoin_months")
        if months is None or months.number == 0:
            self.applied(
                "PRIOR_IN_PERSON_VISIT",
                "§7.11",
                f"no prior in-person visit was required for a physiotherapist's télésoin on {self.day}",
            )
            return
        since = _months_before(self.day, months.number)
        visit = c.last_in_person_visit_date
        if visit is not None and since <= visit <= self.day:
            self.applied(
                "PRIOR_IN_PERSON_VISIT",
                "§7.11",
                f"the physiotherapist saw the patient in person on {visit}, within the {months.number} "
                f"months before the act (since {since})",
                months.source,
                confirmed=months.confirmed,
            )
            return
        if visit is None and c.patient_seen_in_person:
            self.applied(
                "PRIOR_IN_PERSON_VISIT",
                "§7.11",
                f"the physiotherapist attests an in-person act within the previous {months.number} months",
                months.source,
                confirmed=months.confirmed,
            )
            return
        window = self.param("prior_visit.physiotherapist_discharge_months")
        discharge = c.hospital_discharge_date
        if window is not None and discharge is not None:
            opened = _months_before(self.day, window.number)
            if opened <= discharge <= self.day:
                self.applied(
                    "PRIOR_IN_PERSON_VISIT",
                    "§7.11",
                    f"no in-person visit needed: the télésoin follows the patient's hospital discharge on "
                    f"{discharge} (within {window.number} months, since {opened})",
                    window.source,
                    confirmed=window.confirmed,
                )
                return
        seen = f"last seen in person on {visit}" if visit is not None else "no in-person visit given"
        self.refuse(
            Reason.PRIOR_IN_PERSON_VISIT_REQUIRED,
            f"a physiotherapist's télésoin needs an in-person act with the patient within the previous "
            f"{months.number} months (since {since}; {seen}), or a hospital discharge it follows; the first "
            "bilan is never remote",
            "§7.11",
            months.source,
        )

    def _physician_prior_visit(self, source: str) -> None:
        """§7.11: the connaissance préalable of avenant 6, required until avenant 9 removed it (dated)."""
        months = self.param("prior_visit.physician_teleconsultation_months")
        if months is None or months.number == 0:
            self.applied(
                "PRIOR_IN_PERSON_VISIT",
                "§7.11",
                "a physician's téléconsultation needs no prior in-person consultation on the act date (the "
                "connaissance préalable was removed by avenant 9)",
                months.source if months is not None else source,
                confirmed=months.confirmed if months is not None else True,
            )
            return
        needed = (
            f"the patient seen in person by the teleconsultant within the previous {months.number} months"
        )
        if self.act.circumstances.patient_seen_in_person:
            self.applied(
                "PRIOR_IN_PERSON_VISIT",
                "§7.11",
                f"before avenant 9 a physician's téléconsultation needed {needed} (connaissance préalable): "
                "it was",
                months.source,
                confirmed=months.confirmed,
            )
            return
        self.applied(
            "PRIOR_IN_PERSON_VISIT",
            "§7.11",
            f"connaissance préalable in force on {self.day.isoformat()}: not met",
            months.source,
            confirmed=months.confirmed,
        )
        self.refuse(
            Reason.PRIOR_IN_PERSON_VISIT_REQUIRED,
            f"until avenant 9, a physician's téléconsultation was reimbursed only with {needed} "
            "(connaissance préalable, avenant 6)",
            "§7.11",
            months.source,
        )

    def _parcours(self) -> None:
        parcours = in_parcours(self.act, self.catalog)
        why, source = parcours.why, parcours.source
        if parcours.inside:
            self.applied("PARCOURS", "§7.10", why, source, confirmed=parcours.confirmed)
            if self.act.teleconsultation_company:
                self._contract_policy()
            return
        self.outside_parcours = True
        self.applied(
            "PARCOURS", "§7.10", f"outside the parcours de soins: {why}", source, confirmed=parcours.confirmed
        )
        self.warn(
            Reason.OUTSIDE_PARCOURS,
            f"outside the parcours de soins ({why}): the Assurance Maladie reimburses the téléconsultation "
            "at the out-of-parcours rate only (see the REIMBURSEMENT rule applied)",
            "§7.10",
            source,
        )
        self._contract_policy()

    def _contract_policy(self) -> None:
        """The contracts service's answer for the téléconsultation (a contract, the Ordre's visa, a company's
        agrément at the act's date)."""
        decision = self.facts.contract
        if decision is None or (decision.requirement is Requirement.NONE and decision.satisfied):
            self.applied(
                "CONTRACT_POLICY",
                ARCHITECTURE,
                decision.reason if decision else "no contract policy answer: none required",
                decision.source if decision else "",
            )
        elif decision.satisfied:
            self.applied("CONTRACT_POLICY", ARCHITECTURE, decision.reason, decision.source)
        else:
            self.refuse(
                decision.refusal or Reason.REQUIRES_CONTRACT, decision.reason, ARCHITECTURE, decision.source
            )

    def _operator_declaration(self) -> None:
        decision = self.facts.contract
        if decision is None or decision.requirement is Requirement.NONE or decision.satisfied:
            reason = decision.reason if decision else "no contract policy answer: none required"
            self.applied("OPERATOR_DECLARATION", "§7.19", reason, decision.source if decision else "")
            return
        self.refuse(
            decision.refusal
            or (
                Reason.REQUIRES_OPERATOR_DECLARATION
                if decision.requirement is Requirement.DECLARATION
                else Reason.REQUIRES_CONTRACT
            ),
            "télésurveillance forfaits are billed only for an operator declared to the ARS: "
            + decision.reason,
            "§7.19",
            decision.source,
        )

    # --- lines ---

    def _lines(self) -> None:
        act = self.act
        if act.act_type == TELESURVEILLANCE:
            self._telesurveillance_lines()
            return
        line = self._select(act.act_type, PERFORMER, act.performer, what="the performer")
        if line is not None:
            self.q.lines.append(line)
        if act.act_type == TELEEXPERTISE and act.requester is not None:
            requester_line = self._select(TELEEXPERTISE, REQUESTER, act.requester, what="the requester")
            if requester_line is not None:
                self.q.lines.append(requester_line)
        if act.act_type == TELECONSULTATION and act.assistant is not None:
            setting = act.assistance_setting
            assistant_line = self._select(
                TELECONSULTATION,
                ASSISTANT,
                act.assistant,
                what="the assistant",
                keep=lambda e: e.assistance_setting == setting,
                reference="§7.18",
            )
            if assistant_line is not None:
                assistant_line.prescriber = act.performer.practitioner
                self.q.lines.append(assistant_line)

    def _telesurveillance_lines(self) -> None:
        act = self.act
        ts = act.telesurveillance or Telesurveillance()
        if ts.operator_level:
            line = self._select(
                TELESURVEILLANCE,
                PERFORMER,
                act.performer,
                what="the operator",
                keep=lambda e: e.operator_level == ts.operator_level,
                reference="§7.19",
            )
            if line is not None:
                self.q.lines.append(line)
        if ts.technical_forfait:
            candidates = [
                e
                for e in self.catalog.entries_on(self.day)
                if e.act_type == TELESURVEILLANCE
                and e.biller_role == EXPLOITANT
                and e.technical_forfait == ts.technical_forfait
            ]
            if not candidates:
                self._no_entry(TELESURVEILLANCE, EXPLOITANT, "the exploitant", "§7.19")
            elif not ts.device_listed:
                self.refuse(
                    Reason.DEVICE_NOT_LISTED,
                    "the forfait technique needs a digital medical device on the LATM list, "
                    "certified by the ANS",
                    "§7.19",
                    "L.162-52 CSS; décret 2022-1767 art. 3 (H)",
                    code=candidates[0].code,
                )
            else:
                entry = candidates[0]
                self.applied(
                    "WHO_MAY_BILL",
                    "§7.19",
                    f"the exploitant {ts.exploitant} of a listed device bills {entry.code}",
                    entry.source,
                    code=entry.code,
                )
                self.q.lines.append(
                    Line(
                        entry=entry,
                        biller_role=EXPLOITANT,
                        practitioner="",
                        exploitant=ts.exploitant,
                        establishment=act.establishment,
                        overseas=act.performer.overseas,
                        amount_cents=0,
                    )
                )

    def _select(
        self,
        act_type: str,
        role: str,
        who: Participant,
        *,
        what: str,
        keep: Callable[[Entry], bool] | None = None,
        reference: str = "§7.15",
    ) -> Line | None:
        """The first entry of the act type and role in force that `who` may bill, as a line; or refuse."""
        candidates = [
            e
            for e in self.catalog.entries_on(self.day)
            if e.act_type == act_type and e.biller_role == role and (keep is None or keep(e))
        ]
        if not candidates:
            self._no_entry(act_type, role, what, reference)
            return None
        for entry in candidates:
            for rule in entry.billers:
                if _rule_matches(rule, who, self.act, self.day):
                    self.applied(
                        "WHO_MAY_BILL",
                        reference,
                        f"{what} ({_describe(who)}) may bill {entry.code}",
                        rule.source,
                        code=entry.code,
                        confirmed=rule.confirmed,
                    )
                    return Line(
                        entry=entry,
                        biller_role=role,
                        practitioner=who.practitioner,
                        exploitant="",
                        establishment=who.establishment,
                        overseas=who.overseas,
                        amount_cents=0,
                        unconfirmed_values=[] if rule.confirmed else [f"who may bill {entry.code}"],
                    )
        self._not_billable(candidates, who, what, reference)
        return None

    def _no_entry(self, act_type: str, role: str, what: str, reference: str) -> None:
        dated = [e for e in self.catalog.entries if e.act_type == act_type and e.biller_role == role]
        kind = _short(act_type, "ACT_TYPE_").lower()
        if dated:
            periods = ", ".join(f"{e.code} {e.effective_from}..{e.effective_to or ''}" for e in dated)
            self.refuse(
                Reason.NO_TARIFF_AT_DATE,
                f"no tariff for {what} of a {kind} is in force on {self.day.isoformat()} "
                f"(in force: {periods})",
                "§7.14",
            )
        else:
            self.refuse(
                Reason.NO_CATALOG_ENTRY,
                f"the catalog has no code for {what} of a {kind} (for télésoin other than nurses', the "
                "profession's usual NGAP act applies; its code is unconfirmed)",
                "§3.4",
            )

    def _not_billable(self, candidates: list[Entry], who: Participant, what: str, reference: str) -> None:
        codes = "/".join(dict.fromkeys(e.code for e in candidates))
        same_profession = [
            (e, r)
            for e in candidates
            for r in e.billers
            if r.profession == who.profession and (r.effective_from is None or r.effective_from <= self.day)
        ]
        profession = _short(who.profession, "PROFESSION_").lower()
        if not same_profession and candidates[0].act_type == TELESOIN:
            self.refuse(
                Reason.NO_CATALOG_ENTRY,
                f"the catalog has no télésoin code for a {profession}: the profession's usual NGAP "
                "act applies and its télésoin code is unconfirmed",
                "§3.4",
                "domain reference §3.4: MK and other paramedical télésoin codes unconfirmed",
                code=candidates[0].code,
            )
            return
        if not same_profession:
            self.refuse(
                Reason.NOT_BILLABLE_BY_PROFESSION,
                f"{what} is a {profession}: {codes} may not be billed by this profession",
                reference,
                "; ".join(dict.fromkeys(e.source for e in candidates)),
                code=candidates[0].code,
            )
            return
        conditional = [
            (e, r) for e, r in same_profession if r.condition and not _condition_holds(r.condition, self.act)
        ]
        if conditional:
            entry, rule = conditional[0]
            self.refuse(
                Reason.NOT_BILLABLE_BY_PROFESSION,
                f"a {profession} bills {entry.code} {_CONDITION_TEXT.get(rule.condition, rule.condition)}",
                reference,
                rule.source,
                code=entry.code,
            )
            return
        self.refuse(
            Reason.NOT_BILLABLE_BY_SECTOR,
            f"{what} ({_describe(who)}) may not bill {codes} with this specialty or conventional sector",
            reference,
            "; ".join(dict.fromkeys(r.source for _, r in same_profession)),
            code=candidates[0].code,
        )

    # --- amounts ---

    def _price(self, line: Line) -> None:
        entry = line.entry
        line.counts_toward_remote_cap = entry.counts_toward_remote_cap
        confirmed = entry.confirmed
        if line.overseas and entry.overseas_amount_cents is not None:
            line.amount_cents = entry.overseas_amount_cents
            tariff = (
                f"DROM tariff {euros(entry.overseas_amount_cents)} (metropolitan {euros(entry.amount_cents)})"
            )
        elif line.overseas:
            line.amount_cents = entry.amount_cents
            confirmed = False
            line.mark_unconfirmed("DROM tariff")
            tariff = f"{euros(entry.amount_cents)}: no DROM tariff is known, the metropolitan one applies"
        else:
            line.amount_cents = entry.amount_cents
            tariff = euros(entry.amount_cents)
        period = f"in force from {entry.effective_from.isoformat()}" + (
            f" to {entry.effective_to.isoformat()}" if entry.effective_to else ""
        )
        unconfirmed = (
            f" (unconfirmed: {', '.join(entry.unconfirmed_fields)})" if entry.unconfirmed_fields else ""
        )
        self.applied(
            "TARIFF",
            "§7.14",
            f"{entry.code} ({entry.label}) {period}: {tariff}{unconfirmed}",
            entry.source,
            code=entry.code,
            confirmed=confirmed,
        )
        for what in entry.unconfirmed_fields:
            line.mark_unconfirmed(what.replace("_", " "))
        self._reimbursement(line)

    def _reimbursement(self, line: Line) -> None:
        entry = line.entry
        act = self.act
        rate: Parameter | None
        reference = "§7.20"
        if self.outside_parcours and entry.rate_class == "consultation" and line.biller_role == PERFORMER:
            # §7.10 / §3.2: the reference disagrees with itself (30 % or nothing): a dated, unconfirmed rate.
            rate = self.param("reimbursement_rate.outside_parcours")
            why = "outside the parcours de soins"
            reference = "§7.10"
        elif entry.rate_class == "consultation" and act.circumstances.long_term_condition:
            rate = self.param("reimbursement_rate.long_term_condition")
            why = "affection de longue durée"
        else:
            rate = self.param(f"reimbursement_rate.{entry.rate_class}")
            why = f"rate of class {entry.rate_class}"
        if rate is None:
            line.rate_bp = 0
            line.mark_unconfirmed("reimbursement rate")
            self.applied(
                "REIMBURSEMENT",
                reference,
                f"{entry.code}: no reimbursement rate ({why}) in force on the act date",
                code=entry.code,
                confirmed=False,
            )
            return
        line.rate_bp = rate.number
        gross = _apply_rate(line.amount_cents, rate.number)
        participation, participation_confirmed = self._participation(entry, gross)
        line.participation_cents = participation
        line.reimbursement_cents = gross - participation
        if not rate.confirmed:
            line.mark_unconfirmed("reimbursement rate")
        if not participation_confirmed:
            line.mark_unconfirmed("participation forfaitaire")
        detail = f", minus participation forfaitaire {euros(participation)}" if participation else ""
        self.applied(
            "REIMBURSEMENT",
            reference,
            f"{entry.code}: {percent(rate.number)} ({why}) of {euros(line.amount_cents)} = "
            f"{euros(gross)}{detail}: {euros(line.reimbursement_cents)} reimbursed",
            rate.source,
            code=entry.code,
            confirmed=rate.confirmed,
        )

    def _participation(self, entry: Entry, gross: int) -> tuple[int, bool]:
        """(participation forfaitaire deducted, whether every value used is confirmed)."""
        classes = self.param("participation_forfaitaire.rate_classes")
        amount = self.param("participation_forfaitaire.amount")
        if classes is None or amount is None or gross == 0:
            return 0, True
        if entry.rate_class not in {c.strip() for c in classes.text.split(",")}:
            return 0, True
        min_age = self.param("participation_forfaitaire.min_age")
        if min_age is not None and self.act.patient_age < min_age.number:
            self.applied(
                "PARTICIPATION_FORFAITAIRE",
                "§7.20",
                f"no participation forfaitaire under {min_age.number}",
                min_age.source,
                code=entry.code,
                confirmed=min_age.confirmed,
            )
            return 0, min_age.confirmed
        return min(amount.number, gross), amount.confirmed and classes.confirmed

    def _extra_fee(self) -> None:
        fee = self.act.extra_fee_cents
        line = self._performer_line()
        if fee <= 0 or line is None:
            return
        if line.entry.extra_fee_allowed and self.act.performer.sector == SECTOR_2:
            line.extra_fee_cents = fee
            self.applied(
                "DEPASSEMENT",
                "§3.2",
                f"{line.code}: a sector-2 physician may bill a dépassement of {euros(fee)} (not reimbursed)",
                line.entry.source,
                code=line.code,
            )
            return
        if line.entry.act_type == TELEEXPERTISE:
            message = f"no dépassement on a téléexpertise line ({line.code}): the tariff only, 100 % AMO"
            reference, source = "§7.13", "avenant 9; omniprat.org (H)"
        else:
            message = f"{line.code} is billed at the opposable tariff: no dépassement"
            reference, source = "§3.2", line.entry.source
        self.refuse(Reason.DEPASSEMENT_NOT_ALLOWED, message, reference, source, code=line.code)

    def _additional_codes(self) -> None:
        main = self._performer_line()
        for code in self.act.additional_codes:
            if main is None:
                break
            entries = [e for e in self.catalog.entries_on(self.day) if e.code == code]
            if not entries:
                self.refuse(
                    Reason.NO_TARIFF_AT_DATE,
                    f"{code} is not in force on {self.day.isoformat()}",
                    "§7.14",
                    code=code,
                )
                continue
            extra = entries[0]
            if (
                code == main.code
                or not main.entry.cumulable
                or not extra.cumulable
                or (extra.act_type == main.entry.act_type and extra.biller_role == main.biller_role)
            ):
                if not main.entry.cumulable:
                    message = f"{main.code} cannot be cumulated with any other act or majoration on its line"
                    reference = "§7.13" if main.entry.act_type == TELEEXPERTISE else "§7.19"
                elif code == main.code or extra.act_type == main.entry.act_type:
                    message = (
                        f"one {main.entry.act_type.removeprefix('ACT_TYPE_').lower()} code per act: {code}"
                    )
                    reference = "§7.14"
                else:
                    message = f"{code} cannot be cumulated with another act"
                    reference = "§7.13"
                self.refuse(Reason.NOT_CUMULABLE, message, reference, main.entry.source, code=code)
                continue
            rule = next(
                (r for r in extra.billers if _rule_matches(r, self.act.performer, self.act, self.day)), None
            )
            if extra.biller_role != PERFORMER or rule is None:
                self.refuse(
                    Reason.NOT_BILLABLE_BY_PROFESSION,
                    f"{code} is not billed by the performer ({_describe(self.act.performer)})",
                    "§7.15",
                    extra.source,
                    code=code,
                )
                continue
            line = replace(
                main,
                entry=extra,
                extra_fee_cents=0,
                quota=None,
                unconfirmed_values=[] if rule.confirmed else [f"who may bill {code}"],
            )
            self.applied(
                "CUMULATION", "§7.13", f"{code} is cumulated with {main.code}", extra.source, code=code
            )
            self.q.lines.append(line)
            self._price(line)

    def _performer_line(self) -> Line | None:
        return next((line for line in self.q.lines if line.biller_role == PERFORMER), None)

    # --- history ---

    def _quota(self, line: Line) -> None:
        entry = line.entry
        if not entry.quota:
            return
        maximum = self.param(f"quota.{entry.quota}.max")
        mode = self.param(f"quota.{entry.quota}.key")
        if maximum is None or mode is None:
            self.applied(
                "QUOTA", "§7.13", f"{entry.code}: no quota in force on the act date", code=entry.code
            )
            return
        reference = "§7.13" if entry.quota == "teleexpertise" else "§7.19"
        rule = (
            "TELEEXPERTISE_YEARLY_LIMIT"
            if entry.quota == "teleexpertise"
            else "TELESURVEILLANCE_MONTHLY_FORFAIT"
        )
        counted = _MODE_TEXT[mode.text]
        if not self.act.patient:
            self.warn(
                Reason.QUOTA_NOT_EVALUATED,
                f"{entry.code} counts toward a limit of {maximum.number} {counted}; without a patient it was "
                "not checked",
                reference,
                maximum.source,
                code=entry.code,
            )
            return
        biller = line.practitioner or line.exploitant
        key = quota_key(entry.quota, mode.text, line.biller_role, biller, self.act.patient, self.day)
        used = self.facts.quota_used.get(key, 0)
        confirmed = maximum.confirmed and mode.confirmed
        if used >= maximum.number:
            self.q.lines.remove(line)
            self.refuse(
                QUOTA_REFUSALS.get(entry.quota, Reason.TELEEXPERTISE_QUOTA_EXCEEDED),
                f"{entry.code}: the limit of {maximum.number} {counted} is reached ({used} already billed)",
                reference,
                f"{maximum.source}; key: {mode.source}",
                code=entry.code,
            )
            return
        line.quota = QuotaClaim(entry.quota, key, maximum.number, used)
        if not maximum.confirmed:
            line.mark_unconfirmed("quota limit")
        if not mode.confirmed:
            line.mark_unconfirmed("quota counting key")
        self.applied(
            rule,
            reference,
            f"{entry.code}: slot {used + 1} of {maximum.number} {counted}",
            f"{maximum.source}; key: {mode.source}",
            code=entry.code,
            confirmed=confirmed,
        )

    def _remote_cap(self, line: Line) -> None:
        """§7.12: whether the line counts toward its biller's remote-activity cap, and the performer's share.

        Dated: under avenant 9 téléconsultations and téléexpertises count, with no exclusion; under the
        2024 convention téléconsultations only, the médecin traitant's own patients excepted, and 40 % for
        psychiatrists.
        """
        if not line.counts_toward_remote_cap or not line.practitioner:
            return
        act = self.act
        code = line.code
        counted = self.param("remote_cap.counted_act_types")
        if counted is None:
            line.counts_toward_remote_cap = False
            if line.biller_role == PERFORMER:
                none = "no remote-activity cap in force on the act date"
                self.applied("REMOTE_CAP", "§7.12", none, code=code)
            return
        kind = _short(line.entry.act_type, "ACT_TYPE_").lower()
        if line.entry.act_type not in _items(counted, "ACT_TYPE_"):
            line.counts_toward_remote_cap = False
            self.applied(
                "REMOTE_CAP",
                "§7.12",
                f"{code}: a {kind} is not counted by the remote-activity cap on the act date",
                counted.source,
                code=code,
                confirmed=counted.confirmed,
            )
            return
        excluded_parameter = self.param("remote_cap.excluded")
        excluded = _items(excluded_parameter) if excluded_parameter is not None else frozenset()
        own_patient = act.act_type == TELECONSULTATION and act.circumstances.performer_is_treating_physician
        if line.biller_role == PERFORMER and own_patient and TREATING_PHYSICIAN_OWN_PATIENTS in excluded:
            assert excluded_parameter is not None
            line.counts_toward_remote_cap = False
            self.applied(
                "REMOTE_CAP",
                "§7.12",
                f"{code}: the médecin traitant's téléconsultations of their own patients are not counted",
                excluded_parameter.source,
                code=code,
                confirmed=excluded_parameter.confirmed,
            )
            return
        if line.biller_role != PERFORMER:
            # The requester's own téléexpertise act (avenant 9): counted in the ledger for that doctor; the
            # figures given are the performer's, so the requester's share is evaluated on their own acts.
            if act.requester is None or act.requester.profession != PHYSICIAN:
                line.counts_toward_remote_cap = False
                return
            self.applied(
                "REMOTE_CAP",
                "§7.12",
                f"{code}: counts toward the requesting physician's remote activity of {self.day.year}",
                counted.source,
                code=code,
                confirmed=counted.confirmed,
            )
            return
        cap = None
        if act.performer.specialty == PSYCHIATRY:
            cap = self.param("remote_cap.psychiatry")
        if cap is None and act.performer.profession == NURSE:
            cap = self.param("remote_cap.nurse")
        if cap is None:
            cap = self.param("remote_cap.default")
        if cap is None:
            self.applied("REMOTE_CAP", "§7.12", "no remote-activity cap in force on the act date", code=code)
            return
        source = f"{cap.source}; counted: {counted.source}"
        confirmed = cap.confirmed and counted.confirmed
        activity = act.performer_activity
        if activity is None:
            self.applied(
                "REMOTE_CAP",
                "§7.12",
                f"{code}: cap of {percent(cap.number)} not evaluated (no activity figures given)",
                source,
                code=code,
            )
            return
        types = _items(counted, "ACT_TYPE_")
        given = activity.teleconsultations
        what = "téléconsultations"
        if TREATING_PHYSICIAN_OWN_PATIENTS in excluded:
            given -= min(activity.own_patient_teleconsultations, activity.teleconsultations)
            what += " (own patients as médecin traitant excepted)"
        if TELEEXPERTISE in types:
            given += activity.teleexpertises
            what += " and téléexpertises"
        remote = max(given, self.facts.remote_recorded) + 1
        total = activity.conventioned_acts + 1
        ratio = percent(remote * 10000 // total)
        share = f"{remote} remote of {total} acts this year ({ratio}; counted: {what})"
        if remote * 10000 > cap.number * total:
            self.warn(
                Reason.REMOTE_CAP_EXCEEDED,
                f"{share}: above the cap of {percent(cap.number)} of the year's activity (a warning: the CPN "
                "may grant exceptions)",
                "§7.12",
                source,
                code=code,
            )
        self.applied(
            "REMOTE_CAP",
            "§7.12",
            f"{code}: {share}, cap {percent(cap.number)}",
            source,
            code=code,
            confirmed=confirmed,
        )

    def _alternance(self) -> None:
        """§7.10: the alternance of in-person and remote care between the patient and the teleconsultant.

        Checked per act for a physician's téléconsultation when the caller gives the pair's care over the
        window (the hub does not see in-person care): a warning when the remote share is above the dated
        threshold. The sources state the principle without figures, so every value used is unconfirmed.
        """
        act = self.act
        line = self._performer_line()
        if act.act_type != TELECONSULTATION or act.performer.profession != PHYSICIAN or line is None:
            return
        window = self.param("alternance.window_months")
        maximum = self.param("alternance.max_remote_share")
        minimum = self.param("alternance.min_acts")
        if window is None or maximum is None or minimum is None:
            return
        care = act.care_with_performer
        source = f"{window.source}; {maximum.source}; {minimum.source}"
        confirmed = window.confirmed and maximum.confirmed and minimum.confirmed
        if care is None:
            self.applied(
                "ALTERNANCE",
                "§7.10",
                f"alternance of in-person and remote care not evaluated (the patient's care by the "
                f"teleconsultant over {window.number} months was not given)",
                source,
                code=line.code,
            )
            return
        remote = max(care.remote_acts, self.facts.pair_remote_recorded) + 1
        total = care.in_person_acts + remote
        share = (
            f"{remote} of the pair's {total} acts over {window.number} months are remote "
            f"({percent(remote * 10000 // total)}, this one included)"
        )
        if total < minimum.number:
            self.applied(
                "ALTERNANCE",
                "§7.10",
                f"{share}: fewer than {minimum.number} acts, too few to judge the alternance",
                source,
                code=line.code,
                confirmed=confirmed,
            )
            return
        if remote * 10000 > maximum.number * total:
            line.mark_unconfirmed("alternance threshold")
            self.warn(
                Reason.ALTERNANCE_NOT_OBSERVED,
                f"{share}: above {percent(maximum.number)}, in-person and remote care do not alternate, a "
                "condition of the téléconsultation's reimbursement (the threshold is unconfirmed: a warning)",
                "§7.10",
                source,
                code=line.code,
            )
        self.applied(
            "ALTERNANCE",
            "§7.10",
            f"{share}, at most {percent(maximum.number)}",
            source,
            code=line.code,
            confirmed=confirmed,
        )

    def _unconfirmed_warnings(self) -> None:
        for line in self.q.lines:
            if line.unconfirmed:
                self.q.unconfirmed = True
                self.warn(
                    Reason.UNCONFIRMED_VALUE,
                    f"{line.code}: not confirmed by a source: {', '.join(line.unconfirmed_values)} (see the "
                    "rules applied)",
                    "§7.14",
                    line.entry.source,
                    code=line.code,
                )


_MODE_TEXT = {
    "biller_patient_year": "per professional, patient and calendar year",
    "patient_year": "per patient and calendar year",
    "biller_patient_month": "per professional, patient and month",
    "patient_month": "per patient and month",
}


_SECTORS = {
    "CONVENTION_SECTOR_1": "sector 1",
    "CONVENTION_SECTOR_2_OPTAM": "sector 2 OPTAM",
    "CONVENTION_SECTOR_2": "sector 2",
    "CONVENTION_SECTOR_NON_CONVENTIONED": "non-conventioned",
    "CONVENTION_SECTOR_SALARIED": "salaried",
}


def _describe(who: Participant) -> str:
    parts = [_short(who.profession, "PROFESSION_").lower().replace("_", " ")]
    if who.specialty not in ("SPECIALTY_NONE", "SPECIALTY_UNSPECIFIED", ""):
        parts.append(_short(who.specialty, "SPECIALTY_").lower().replace("_", " "))
    parts.append(_SECTORS.get(who.sector, who.sector))
    return ", ".join(parts)


def _apply_rate(cents: int, basis_points: int) -> int:
    value = (Decimal(cents) * basis_points / 10000).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return int(value)


# --- Entry points -------------------------------------------------------------------------------------------


def quote(act: Act, catalog: Catalog, facts: Facts | None = None) -> Quote:
    """What the act bills and why, given the facts of its history."""
    return _Evaluation(act, catalog, facts or Facts()).run()


def needs(act: Act, catalog: Catalog) -> Needs:
    """The facts `quote` depends on: quota counters, the remote cap's count, a contract answer, the pair's
    recorded téléconsultations for the alternance."""
    day = act.act_date
    draft = _Evaluation(act, catalog, Facts()).run()
    keys = tuple(sorted({line.quota.key for line in draft.lines if line.quota is not None}))
    remote = None
    performer_counts = any(
        line.counts_toward_remote_cap and line.biller_role == PERFORMER for line in draft.lines
    )
    if performer_counts and act.performer_activity is not None:
        remote = (act.performer.practitioner.removeprefix("practitioners/"), day.year)
    activity = None
    if act.act_type == TELESURVEILLANCE:
        activity = Activity(
            ActivityKind.TELESURVEILLANCE_OPERATOR,
            act.region,
            act.performer.practitioner,
            act.performer.establishment,
            day,
        )
    elif act.act_type == TELECONSULTATION and act.teleconsultation_company:
        activity = Activity(
            ActivityKind.TELECONSULTATION_COMPANY,
            act.region,
            act.performer.practitioner,
            act.performer.establishment,
            day,
            company=act.teleconsultation_company,
            in_parcours=in_parcours(act, catalog).inside,
        )
    elif act.act_type == TELECONSULTATION and not in_parcours(act, catalog).inside:
        activity = Activity(
            ActivityKind.OUTSIDE_PARCOURS_TELECONSULTATION,
            act.region,
            act.performer.practitioner,
            act.performer.establishment,
            day,
        )
    return Needs(
        quota_keys=keys,
        remote_cap=remote,
        contract_activity=activity,
        alternance=_alternance_window(act, catalog, draft),
    )


def months_before(day: date, months: int) -> date:
    """The same day `months` calendar months earlier (the month's last day when it has no such day)."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def _alternance_window(act: Act, catalog: Catalog, draft: Quote) -> PairWindow | None:
    """The pair and period (the window's months up to the act date) whose recorded téléconsultations the
    alternance check counts, when it runs."""
    checked = any(a.rule == "ALTERNANCE" for a in draft.applied)
    window = catalog.parameter("alternance.window_months", act.act_date)
    if not checked or window is None or act.care_with_performer is None or not act.patient:
        return None
    return PairWindow(
        rpps=act.performer.practitioner.removeprefix("practitioners/"),
        patient=act.patient,
        start=months_before(act.act_date, window.number) + timedelta(days=1),
        end=act.act_date,
    )


def _months_before(day: date, months: int) -> date:
    """The same day `months` calendar months earlier (the month's last day when it has no such day)."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))
