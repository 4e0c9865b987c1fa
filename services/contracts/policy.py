"""The contract-requirement policy: does a telemedicine activity need a contract, a visa, a declaration?

`evaluate(activity, on, region_policy)` is a pure function of its arguments and of the dated national data in
`policies/national.toml`: it answers with the requirement (NONE, DECLARATION_REQUIRED, CONTRACT_REQUIRED,
CONTRACT_WITH_ORDINAL_VISA_REQUIRED), the obligations coverage must find (a contract, the Ordre's visa, an
operator declaration, a company's agrément) and every reason with its legal source. Nothing here touches the
database: the service reads the region's published versions and passes the one in force (functional core,
imperative shell, like billing's `rules.quote`).

Regimes (domain reference §2.3): the 2010 décret (every telemedicine activity in a national programme, a CPOM
or a particular contract, from 2010-10-19), the droit commun since décret 2018-788 (2018-09-15: no
contract; télésurveillance operators declare from 2023-07-01; téléconsultation companies need an agrément
since décret 2024-164), and the CNOM 2016 recommendation (a contract with the Ordre's visa for experimental,
out-of-parcours or commercial offers) as a profile a region selects by publishing a dated version.

    python -m services.contracts.policy check       # parse and validate the data file
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from services.contracts.models import ClockRule, Reason

DATA_FILE = Path(__file__).resolve().parent / "policies" / "national.toml"

# The five telemedicine acts of R.6316-1 CSP, then télésoin (L.6316-2) and téléconseil (not an act), spelled
# as `parcours.billing.v1.ActType` without its prefix.
TELEMEDICINE_ACTS = frozenset(
    {"TELECONSULTATION", "TELEEXPERTISE", "TELESURVEILLANCE", "TELEASSISTANCE", "REGULATION"}
)
ACT_TYPES = TELEMEDICINE_ACTS | {"TELESOIN", "TELECONSEIL"}
# Who offers the activity (`parcours.contracts.v1.Offerer` without its prefix).
OFFERERS = frozenset(
    {
        "ESTABLISHMENT",
        "LIBERAL_PRACTITIONER",
        "TELECONSULTATION_COMPANY",
        "COMPLEMENTARY_INSURER",
        "OTHER_PRIVATE_PROVIDER",
    }
)
REGIMES = frozenset({"DECRET_2010", "DROIT_COMMUN_2018"})
RULES = frozenset(
    {
        "ETAPES_EXEMPTION",
        "TELESURVEILLANCE_OPERATOR_DECLARATION",
        "TELESURVEILLANCE_EXPERIMENTATION",
        "TELECONSULTATION_COMPANY_AGREMENT",
    }
)


class Requirement:
    """The headline answer (`parcours.contracts.v1.Requirement` without its prefix)."""

    NONE = "NONE"
    DECLARATION_REQUIRED = "DECLARATION_REQUIRED"
    CONTRACT_REQUIRED = "CONTRACT_REQUIRED"
    CONTRACT_WITH_ORDINAL_VISA_REQUIRED = "CONTRACT_WITH_ORDINAL_VISA_REQUIRED"


class Obligation:
    """What coverage must find for the activity to be billable (`parcours.contracts.v1.Obligation`)."""

    CONTRACT = "CONTRACT"
    ORDINAL_VISA = "ORDINAL_VISA"
    OPERATOR_DECLARATION = "OPERATOR_DECLARATION"
    AGREMENT = "AGREMENT"


class Profile:
    """What a region selects (`parcours.contracts.v1.RegionPolicy.Profile`)."""

    NATIONAL = "NATIONAL"
    CNOM_2016 = "CNOM_2016"

    ALL = frozenset({NATIONAL, CNOM_2016})


class ReasonCode:
    """Stable codes of the reasons an evaluation gives."""

    NOT_A_TELEMEDICINE_ACT = "NOT_A_TELEMEDICINE_ACT"
    TELESOIN_NOT_TELEMEDICINE = "TELESOIN_NOT_TELEMEDICINE"
    DECRET_2010_CONTRACT = "DECRET_2010_CONTRACT"
    DECRET_2010_CONVENTION = "DECRET_2010_CONVENTION"
    ETAPES_EXEMPTION = "ETAPES_EXEMPTION"
    DROIT_COMMUN_NO_CONTRACT = "DROIT_COMMUN_NO_CONTRACT"
    TELESURVEILLANCE_OPERATOR_DECLARATION = "TELESURVEILLANCE_OPERATOR_DECLARATION"
    TELESURVEILLANCE_EXPERIMENTATION = "TELESURVEILLANCE_EXPERIMENTATION"
    TELECONSULTATION_COMPANY_AGREMENT = "TELECONSULTATION_COMPANY_AGREMENT"
    CNOM_2016_CONTRACT_WITH_VISA = "CNOM_2016_CONTRACT_WITH_VISA"
    CNOM_2016_NOT_TRIGGERED = "CNOM_2016_NOT_TRIGGERED"


class PolicyError(ValueError):
    """The data file is malformed."""


class PolicyRefusal(Exception):
    """A business refusal with a stable reason (models.REASON_STATUS says its status)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# --------------------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True, kw_only=True)
class Dated:
    effective_from: date
    effective_to: date | None
    reference: str
    source: str
    unconfirmed: tuple[str, ...]

    @property
    def confirmed(self) -> bool:
        return not self.unconfirmed

    def in_force(self, day: date) -> bool:
        return self.effective_from <= day and (self.effective_to is None or day <= self.effective_to)


@dataclass(frozen=True, kw_only=True)
class Regime(Dated):
    code: str
    label: str


@dataclass(frozen=True, kw_only=True)
class Rule(Dated):
    code: str


@dataclass(frozen=True, kw_only=True)
class ClockSpec(Dated):
    name: str
    label: str
    decision: str
    period_months: int
    period_days: int
    resume: str

    def rule(self) -> ClockRule:
        return ClockRule(
            name=self.name,
            decision=self.decision,
            period_months=self.period_months,
            period_days=self.period_days,
            resume=self.resume,
            source=self.source,
            confirmed=self.confirmed,
        )


@dataclass(frozen=True, kw_only=True)
class AgrementValidity(Dated):
    validity_months: int
    renewal_window_months: int


@dataclass(frozen=True, kw_only=True)
class CnomProfile:
    label: str
    offerers: frozenset[str]
    experimental: bool
    outside_parcours: bool
    reference: str
    source: str
    unconfirmed: tuple[str, ...]

    @property
    def confirmed(self) -> bool:
        return not self.unconfirmed


@dataclass(frozen=True, kw_only=True)
class NationalPolicy:
    """One version of the national data file."""

    policy: str
    version: str
    regimes: tuple[Regime, ...]
    rules: tuple[Rule, ...]
    cnom_2016: CnomProfile
    clocks: tuple[ClockSpec, ...]
    agrement_validity: tuple[AgrementValidity, ...]
    sha256: str

    def regime_on(self, day: date) -> Regime:
        for regime in self.regimes:
            if regime.in_force(day):
                return regime
        raise PolicyRefusal(
            Reason.NO_POLICY_IN_FORCE,
            f"no telemedicine regime is in force on {day.isoformat()} (the first starts on "
            f"{min(r.effective_from for r in self.regimes).isoformat()})",
        )

    def rule_on(self, code: str, day: date) -> Rule | None:
        return next((r for r in self.rules if r.code == code and r.in_force(day)), None)

    def clock_on(self, name: str, day: date) -> ClockSpec:
        for clock in self.clocks:
            if clock.name == name and clock.in_force(day):
                return clock
        raise PolicyRefusal(Reason.NO_POLICY_IN_FORCE, f"no {name} clock is in force on {day.isoformat()}")

    def agrement_validity_on(self, day: date) -> AgrementValidity:
        for validity in self.agrement_validity:
            if validity.in_force(day):
                return validity
        raise PolicyRefusal(
            Reason.NO_POLICY_IN_FORCE, f"no agrément validity rule is in force on {day.isoformat()}"
        )


@dataclass(frozen=True, kw_only=True)
class RegionPolicy:
    """A version of a region's policy, published by one of its ARS officers; never edited once published."""

    region: str  # INSEE region code
    version: int
    effective_from: date
    profile: str  # Profile.*
    # CNOM 2016: the offers that count as commercial; None keeps the national list.
    cnom_offerers: frozenset[str] | None = None
    published_by: str = ""
    published_at: datetime | None = None
    note: str = ""

    @property
    def name(self) -> str:
        return f"regions/{self.region}/contractPolicies/{self.version}"


# --------------------------------------------------------------------------------------------------------
# Evaluation


@dataclass(frozen=True, kw_only=True)
class Activity:
    """A telemedicine activity as the policy sees it (issue 10 §1)."""

    act_type: str  # ACT_TYPES
    offerer: str  # OFFERERS
    in_parcours: bool
    experimental: bool

    def __post_init__(self) -> None:
        if self.act_type not in ACT_TYPES:
            raise ValueError(f"act_type must be one of {sorted(ACT_TYPES)}")
        if self.offerer not in OFFERERS:
            raise ValueError(f"offerer must be one of {sorted(OFFERERS)}")


@dataclass(frozen=True, kw_only=True)
class PolicyReason:
    code: str  # ReasonCode.*
    text: str
    source: str
    confirmed: bool = True
    # The obligation this reason adds ('' when it only explains).
    obligation: str = ""


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    requirement: str  # Requirement.*
    obligations: frozenset[str]
    reasons: tuple[PolicyReason, ...]
    regime: str
    # The region's version used ('' when the region follows the national regime).
    region_policy: str = ""
    policy_version: str = ""

    @property
    def confirmed(self) -> bool:
        return all(r.confirmed for r in self.reasons)


def requirement_of(obligations: Iterable[str]) -> str:
    """The headline requirement of a set of obligations (the agrément is reported beside it)."""
    held = set(obligations)
    if Obligation.CONTRACT in held:
        if Obligation.ORDINAL_VISA in held:
            return Requirement.CONTRACT_WITH_ORDINAL_VISA_REQUIRED
        return Requirement.CONTRACT_REQUIRED
    if Obligation.OPERATOR_DECLARATION in held:
        return Requirement.DECLARATION_REQUIRED
    return Requirement.NONE


_OFFERER_WORDS = {
    "ESTABLISHMENT": "an establishment",
    "LIBERAL_PRACTITIONER": "a liberal practitioner",
    "TELECONSULTATION_COMPANY": "a téléconsultation company",
    "COMPLEMENTARY_INSURER": "a complementary insurer",
    "OTHER_PRIVATE_PROVIDER": "a private provider",
}


def evaluate(
    activity: Activity,
    on: date,
    region_policy: RegionPolicy | None,
    national: NationalPolicy | None = None,
) -> Evaluation:
    """What `activity` needs on `on` under the national regime and the region's policy version in force.

    `region_policy` is the version in force on `on` (`region_policy_on`), or None when the region never
    published one. Raises `PolicyRefusal(NO_POLICY_IN_FORCE)` for a date before the first regime.
    """
    data = national if national is not None else national_policy()
    regime = data.regime_on(on)
    reasons: list[PolicyReason] = []

    def add(code: str, text: str, dated: Dated | CnomProfile, obligation: str = "") -> None:
        reasons.append(
            PolicyReason(
                code=code, text=text, source=dated.source, confirmed=dated.confirmed, obligation=obligation
            )
        )

    act = activity.act_type
    if act == "TELECONSEIL":
        add(
            ReasonCode.NOT_A_TELEMEDICINE_ACT,
            "téléconseil is not one of the five telemedicine acts of R.6316-1 CSP: no contract applies",
            regime,
        )
    elif regime.code == "DECRET_2010":
        exemption = data.rule_on("ETAPES_EXEMPTION", on)
        if act == "TELESOIN":
            add(
                ReasonCode.TELESOIN_NOT_TELEMEDICINE,
                "télésoin is not telemedicine: R.6316-6 CSP does not apply to it",
                regime,
            )
        elif activity.experimental and exemption is not None:
            add(
                ReasonCode.ETAPES_EXEMPTION,
                "experiments under LFSS 2014 art. 36 (ETAPES) are exempt from the R.6316-6 contract",
                exemption,
            )
        else:
            add(
                ReasonCode.DECRET_2010_CONTRACT,
                "under the 2010 décret every telemedicine activity sits in a national programme, a CPOM or a "
                "particular contract signed by the ARS director general (R.6316-6 CSP)",
                regime,
                Obligation.CONTRACT,
            )
            add(
                ReasonCode.DECRET_2010_CONVENTION,
                "the actors of the activity also sign a convention between them (décret 2010-1229)",
                regime,
            )
    else:
        add(
            ReasonCode.DROIT_COMMUN_NO_CONTRACT,
            "since décret 2018-788 no ARS contract is required for a telemedicine activity",
            regime,
        )
        if act == "TELESURVEILLANCE":
            declaration = data.rule_on("TELESURVEILLANCE_OPERATOR_DECLARATION", on)
            experimentation = data.rule_on("TELESURVEILLANCE_EXPERIMENTATION", on)
            if declaration is not None:
                add(
                    ReasonCode.TELESURVEILLANCE_OPERATOR_DECLARATION,
                    "a télésurveillance operator declares its activity to the ARS; the declaration "
                    "conditions the télésurveillance forfaits (décrets 2022-1767 and 2022-1769)",
                    declaration,
                    Obligation.OPERATOR_DECLARATION,
                )
            elif experimentation is not None:
                add(
                    ReasonCode.TELESURVEILLANCE_EXPERIMENTATION,
                    "télésurveillance runs in the ETAPES experiments until 30 June 2023: their cahier des "
                    "charges applies, not an ARS contract or declaration",
                    experimentation,
                )
    if act == "TELECONSULTATION" and activity.offerer == "TELECONSULTATION_COMPANY":
        agrement = data.rule_on("TELECONSULTATION_COMPANY_AGREMENT", on)
        if agrement is not None:
            add(
                ReasonCode.TELECONSULTATION_COMPANY_AGREMENT,
                "a téléconsultation company billing its salaried doctors' téléconsultations needs the "
                "ministers' agrément (L.4081-1 CSP), sector-1 tariffs only and no dépassement",
                agrement,
                Obligation.AGREMENT,
            )

    applied = ""
    if region_policy is not None:
        if region_policy.effective_from > on:
            raise ValueError("region_policy is not in force on the date evaluated")
        applied = region_policy.name
        if region_policy.profile == Profile.CNOM_2016 and act in TELEMEDICINE_ACTS:
            cnom = data.cnom_2016
            offerers = (
                region_policy.cnom_offerers if region_policy.cnom_offerers is not None else cnom.offerers
            )
            triggers = []
            if cnom.experimental and activity.experimental:
                triggers.append("it is experimental")
            if cnom.outside_parcours and not activity.in_parcours:
                triggers.append("it is outside the parcours de soins")
            if activity.offerer in offerers:
                triggers.append(f"it is offered by {_OFFERER_WORDS[activity.offerer]}")
            if triggers:
                text = (
                    f"region {region_policy.region} follows the CNOM 2016 recommendation "
                    f"(version {region_policy.version}): a contract with the Ordre's visa is required "
                    "because " + " and ".join(triggers)
                )
                add(ReasonCode.CNOM_2016_CONTRACT_WITH_VISA, text, cnom, Obligation.CONTRACT)
                reasons.append(
                    PolicyReason(
                        code=ReasonCode.CNOM_2016_CONTRACT_WITH_VISA,
                        text="the Ordre's visa is required on that contract",
                        source=cnom.source,
                        confirmed=cnom.confirmed,
                        obligation=Obligation.ORDINAL_VISA,
                    )
                )
            else:
                add(
                    ReasonCode.CNOM_2016_NOT_TRIGGERED,
                    f"region {region_policy.region} follows the CNOM 2016 recommendation, which asks nothing "
                    "of an in-parcours, non-experimental activity of an establishment or a practitioner",
                    cnom,
                )

    obligations = frozenset(r.obligation for r in reasons if r.obligation)
    return Evaluation(
        requirement=requirement_of(obligations),
        obligations=obligations,
        reasons=tuple(reasons),
        regime=regime.code,
        region_policy=applied,
        policy_version=data.version,
    )


# --------------------------------------------------------------------------------------------------------
# Region versions


def region_policy_on(versions: Sequence[RegionPolicy], on: date) -> RegionPolicy | None:
    """The version in force on `on`: the latest one that started on or before it."""
    started = [v for v in versions if v.effective_from <= on]
    return max(started, key=lambda v: (v.effective_from, v.version)) if started else None


def next_region_version(
    versions: Sequence[RegionPolicy],
    *,
    region: str,
    effective_from: date,
    profile: str,
    today: date,
    cnom_offerers: Iterable[str] | None = None,
    published_by: str = "",
    published_at: datetime | None = None,
    note: str = "",
) -> RegionPolicy:
    """The version to publish next, or a refusal: a new version never rewrites a date already past.

    It starts today or later (POLICY_EFFECTIVE_DATE_IN_PAST) and after every published version
    (POLICY_VERSION_NOT_LATEST), so what was evaluated for a past date stays what it was.
    """
    if profile not in Profile.ALL:
        raise ValueError(f"profile must be one of {sorted(Profile.ALL)}")
    offerers = None if cnom_offerers is None else frozenset(cnom_offerers)
    if offerers is not None and not offerers <= OFFERERS:
        raise ValueError(f"cnom_offerers must be among {sorted(OFFERERS)}")
    if effective_from < today:
        raise PolicyRefusal(
            Reason.POLICY_EFFECTIVE_DATE_IN_PAST,
            f"a policy version cannot start in the past ({effective_from.isoformat()} < {today.isoformat()})",
        )
    own = [v for v in versions if v.region == region]
    latest = max((v.effective_from for v in own), default=None)
    if latest is not None and effective_from <= latest:
        raise PolicyRefusal(
            Reason.POLICY_VERSION_NOT_LATEST,
            f"version {max(v.version for v in own)} already starts on {latest.isoformat()}: a new version "
            "starts after it",
        )
    return RegionPolicy(
        region=region,
        version=max((v.version for v in own), default=0) + 1,
        effective_from=effective_from,
        profile=profile,
        cnom_offerers=offerers,
        published_by=published_by,
        published_at=published_at,
        note=note,
    )


# --------------------------------------------------------------------------------------------------------
# Reading the data file


def _date(value: object, where: str) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    raise PolicyError(f"{where}: {value!r} is not a date (write 2024-03-02, unquoted)")


def _keys(raw: Mapping[str, Any], allowed: set[str], required: set[str], where: str) -> None:
    unknown = set(raw) - allowed
    if unknown:
        raise PolicyError(f"{where}: unknown keys {sorted(unknown)}")
    missing = required - set(raw)
    if missing:
        raise PolicyError(f"{where}: missing keys {sorted(missing)}")


_DATED = {"effective_from", "effective_to", "reference", "source", "unconfirmed"}


def _dated(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    started = _date(raw["effective_from"], f"{where}.effective_from")
    ended = _date(raw["effective_to"], f"{where}.effective_to") if "effective_to" in raw else None
    if ended is not None and ended < started:
        raise PolicyError(f"{where}: effective_to is before effective_from")
    if not raw.get("source"):
        raise PolicyError(f"{where}: every value has a source")
    unconfirmed = raw.get("unconfirmed", [])
    if not isinstance(unconfirmed, list) or not all(isinstance(u, str) for u in unconfirmed):
        raise PolicyError(f"{where}.unconfirmed: a list of field names")
    return {
        "effective_from": started,
        "effective_to": ended,
        "reference": raw.get("reference", ""),
        "source": raw["source"],
        "unconfirmed": tuple(unconfirmed),
    }


def _no_overlap(items: Sequence[Dated], label: str) -> None:
    ordered = sorted(items, key=lambda d: d.effective_from)
    for before, after in itertools.pairwise(ordered):
        if before.effective_to is None or before.effective_to >= after.effective_from:
            raise PolicyError(f"{label}: two versions in force on {after.effective_from.isoformat()}")


def parse(text: str) -> NationalPolicy:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"not TOML: {exc}") from None
    _keys(
        raw,
        {"policy", "version", "regimes", "rules", "cnom_2016", "clocks", "agrement_validity"},
        {"policy", "version", "regimes", "rules", "cnom_2016", "clocks", "agrement_validity"},
        "file",
    )
    regimes = []
    for i, item in enumerate(raw["regimes"]):
        where = f"regimes[{i}]"
        _keys(item, _DATED | {"code", "label"}, {"code", "label", "effective_from", "source"}, where)
        if item["code"] not in REGIMES:
            raise PolicyError(f"{where}: unknown regime {item['code']!r} (known: {sorted(REGIMES)})")
        regimes.append(Regime(code=item["code"], label=item["label"], **_dated(item, where)))
    _no_overlap(regimes, "regimes")
    ordered = sorted(regimes, key=lambda r: r.effective_from)
    for before, after in itertools.pairwise(ordered):
        if before.effective_to is not None and (after.effective_from - before.effective_to).days != 1:
            raise PolicyError(f"regimes: a gap after {before.effective_to.isoformat()}")

    rules = []
    for i, item in enumerate(raw["rules"]):
        where = f"rules[{i}]"
        _keys(item, _DATED | {"code"}, {"code", "effective_from", "source"}, where)
        if item["code"] not in RULES:
            raise PolicyError(f"{where}: unknown rule {item['code']!r} (known: {sorted(RULES)})")
        rules.append(Rule(code=item["code"], **_dated(item, where)))
    for code in RULES:
        _no_overlap([r for r in rules if r.code == code], f"rules {code}")

    cnom_raw = raw["cnom_2016"]
    _keys(
        cnom_raw,
        {"label", "offerers", "experimental", "outside_parcours", "reference", "source", "unconfirmed"},
        {"label", "offerers", "experimental", "outside_parcours", "source"},
        "cnom_2016",
    )
    offerers = frozenset(cnom_raw["offerers"])
    if not offerers <= OFFERERS:
        raise PolicyError(f"cnom_2016.offerers: unknown offerers {sorted(offerers - OFFERERS)}")
    cnom = CnomProfile(
        label=cnom_raw["label"],
        offerers=offerers,
        experimental=bool(cnom_raw["experimental"]),
        outside_parcours=bool(cnom_raw["outside_parcours"]),
        reference=cnom_raw.get("reference", ""),
        source=cnom_raw["source"],
        unconfirmed=tuple(cnom_raw.get("unconfirmed", [])),
    )

    clocks = []
    for i, item in enumerate(raw["clocks"]):
        where = f"clocks[{i}]"
        fields = {"name", "label", "decision", "period_months", "period_days", "resume"}
        _keys(item, _DATED | fields, fields | {"effective_from", "source"}, where)
        if item["decision"] not in {"ACCEPTANCE", "REJECTION"}:
            raise PolicyError(f"{where}.decision: ACCEPTANCE or REJECTION")
        if item["resume"] not in {"CONTINUE", "RESET"}:
            raise PolicyError(f"{where}.resume: CONTINUE or RESET")
        if (
            item["period_months"] < 0
            or item["period_days"] < 0
            or item["period_months"] + item["period_days"] == 0
        ):
            raise PolicyError(f"{where}: the period is positive")
        clocks.append(
            ClockSpec(
                name=item["name"],
                label=item["label"],
                decision=item["decision"],
                period_months=item["period_months"],
                period_days=item["period_days"],
                resume=item["resume"],
                **_dated(item, where),
            )
        )
    for name in {c.name for c in clocks}:
        _no_overlap([c for c in clocks if c.name == name], f"clocks {name}")

    validity = []
    for i, item in enumerate(raw["agrement_validity"]):
        where = f"agrement_validity[{i}]"
        fields = {"validity_months", "renewal_window_months"}
        _keys(item, _DATED | fields, fields | {"effective_from", "source"}, where)
        if item["validity_months"] <= 0 or item["renewal_window_months"] < 0:
            raise PolicyError(f"{where}: months are positive")
        validity.append(
            AgrementValidity(
                validity_months=item["validity_months"],
                renewal_window_months=item["renewal_window_months"],
                **_dated(item, where),
            )
        )
    _no_overlap(validity, "agrement_validity")

    return NationalPolicy(
        policy=raw["policy"],
        version=str(raw["version"]),
        regimes=tuple(regimes),
        rules=tuple(rules),
        cnom_2016=cnom,
        clocks=tuple(clocks),
        agrement_validity=tuple(validity),
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


def read_data_file(path: Path = DATA_FILE) -> NationalPolicy:
    return parse(path.read_text(encoding="utf-8"))


@functools.cache
def national_policy() -> NationalPolicy:
    """The shipped national data, read once per process."""
    return read_data_file()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.contracts.policy", description="The contract-requirement policy data file."
    )
    parser.add_argument("command", choices=("check",))
    parser.add_argument("--file", type=Path, default=DATA_FILE)
    args = parser.parse_args(argv)
    try:
        data = read_data_file(args.file)
    except PolicyError as exc:
        sys.stderr.write(f"{args.file}: {exc}\n")
        return 1
    dated: list[Dated] = [*data.regimes, *data.rules, *data.clocks, *data.agrement_validity]
    unconfirmed = sum(not d.confirmed for d in dated) + (not data.cnom_2016.confirmed)
    sys.stdout.write(
        f"{data.policy} {data.version}: {len(data.regimes)} regimes, {len(data.rules)} rules, "
        f"{len(data.clocks)} clocks ({unconfirmed} unconfirmed), sha256 {data.sha256[:12]}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
