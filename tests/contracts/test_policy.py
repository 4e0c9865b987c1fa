"""The contract-requirement policy as a table: regime × activity × date boundaries × region profile."""

from __future__ import annotations

from datetime import date

import pytest

from services.contracts.policy import (
    DATA_FILE,
    Activity,
    Obligation,
    PolicyError,
    PolicyRefusal,
    Profile,
    ReasonCode,
    RegionPolicy,
    Requirement,
    evaluate,
    next_region_version,
    parse,
    read_data_file,
    region_policy_on,
)

N, DECL, CONTRACT, VISA = (
    Requirement.NONE,
    Requirement.DECLARATION_REQUIRED,
    Requirement.CONTRACT_REQUIRED,
    Requirement.CONTRACT_WITH_ORDINAL_VISA_REQUIRED,
)
C, V, D, A = (
    Obligation.CONTRACT,
    Obligation.ORDINAL_VISA,
    Obligation.OPERATOR_DECLARATION,
    Obligation.AGREMENT,
)

# Region 84 selects the CNOM 2016 recommendation from 2025-01-01; region 93 only ever published "national".
CNOM_84 = RegionPolicy(region="84", version=1, effective_from=date(2025, 1, 1), profile=Profile.CNOM_2016)
NATIONAL_93 = RegionPolicy(region="93", version=1, effective_from=date(2020, 1, 1), profile=Profile.NATIONAL)


def act(
    act_type: str = "TELECONSULTATION",
    offerer: str = "ESTABLISHMENT",
    *,
    in_parcours: bool = True,
    experimental: bool = False,
) -> Activity:
    return Activity(act_type=act_type, offerer=offerer, in_parcours=in_parcours, experimental=experimental)


# (activity, date, region versions, requirement, obligations, reason codes that must appear, confirmed)
TABLE = [
    # 2010 décret: every telemedicine act needs a contract, from the décret's date to the eve of the reform.
    (act(), date(2010, 10, 19), [], CONTRACT, {C}, {ReasonCode.DECRET_2010_CONTRACT}, True),
    (act("TELEEXPERTISE", "LIBERAL_PRACTITIONER"), date(2018, 9, 14), [], CONTRACT, {C}, set(), True),
    (act("REGULATION"), date(2012, 1, 1), [], CONTRACT, {C}, {ReasonCode.DECRET_2010_CONVENTION}, True),
    (act("TELESOIN"), date(2012, 1, 1), [], N, set(), {ReasonCode.TELESOIN_NOT_TELEMEDICINE}, True),
    # ETAPES experiments exempt from 2014 (the exemption's start date is unconfirmed).
    (act("TELEEXPERTISE", experimental=True), date(2013, 12, 31), [], CONTRACT, {C}, set(), True),
    (
        act("TELEEXPERTISE", experimental=True),
        date(2014, 1, 1),
        [],
        N,
        set(),
        {ReasonCode.ETAPES_EXEMPTION},
        False,
    ),
    # Droit commun from 2018-09-15.
    (act(), date(2018, 9, 15), [], N, set(), {ReasonCode.DROIT_COMMUN_NO_CONTRACT}, True),
    (act("TELEEXPERTISE", in_parcours=False), date(2026, 3, 1), [], N, set(), set(), True),
    # Télésurveillance: ETAPES until 2023-06-30, operator declaration from 2023-07-01.
    (
        act("TELESURVEILLANCE"),
        date(2023, 6, 30),
        [],
        N,
        set(),
        {ReasonCode.TELESURVEILLANCE_EXPERIMENTATION},
        True,
    ),
    (
        act("TELESURVEILLANCE"),
        date(2023, 7, 1),
        [],
        DECL,
        {D},
        {ReasonCode.TELESURVEILLANCE_OPERATOR_DECLARATION},
        True,
    ),
    # Téléconsultation companies: an agrément from décret 2024-164 (entry into force unconfirmed).
    (act(offerer="TELECONSULTATION_COMPANY"), date(2024, 3, 1), [], N, set(), set(), True),
    (
        act(offerer="TELECONSULTATION_COMPANY"),
        date(2024, 3, 2),
        [],
        N,
        {A},
        {ReasonCode.TELECONSULTATION_COMPANY_AGREMENT},
        False,
    ),
    (act("TELEEXPERTISE", "TELECONSULTATION_COMPANY"), date(2025, 1, 1), [], N, set(), set(), True),
    # Téléconseil is never an act.
    (
        act("TELECONSEIL", "OTHER_PRIVATE_PROVIDER"),
        date(2015, 1, 1),
        [],
        N,
        set(),
        {ReasonCode.NOT_A_TELEMEDICINE_ACT},
        True,
    ),
    # Region 84 on the CNOM 2016 profile from 2025-01-01: the day before, the national answer.
    (act(in_parcours=False), date(2024, 12, 31), [CNOM_84], N, set(), set(), True),
    (
        act(in_parcours=False),
        date(2025, 1, 1),
        [CNOM_84],
        VISA,
        {C, V},
        {ReasonCode.CNOM_2016_CONTRACT_WITH_VISA},
        False,
    ),
    (act(), date(2025, 1, 1), [CNOM_84], N, set(), {ReasonCode.CNOM_2016_NOT_TRIGGERED}, False),
    (
        act("TELEEXPERTISE", "LIBERAL_PRACTITIONER", experimental=True),
        date(2026, 1, 1),
        [CNOM_84],
        VISA,
        {C, V},
        set(),
        False,
    ),
    (act(offerer="COMPLEMENTARY_INSURER"), date(2026, 1, 1), [CNOM_84], VISA, {C, V}, set(), False),
    (
        act("TELEASSISTANCE", "OTHER_PRIVATE_PROVIDER"),
        date(2026, 1, 1),
        [CNOM_84],
        VISA,
        {C, V},
        set(),
        False,
    ),
    (act(offerer="TELECONSULTATION_COMPANY"), date(2026, 1, 1), [CNOM_84], VISA, {C, V, A}, set(), False),
    # A télésurveillance offered by an insurer needs the contract with visa and the operator's declaration.
    (
        act("TELESURVEILLANCE", "COMPLEMENTARY_INSURER"),
        date(2026, 1, 1),
        [CNOM_84],
        VISA,
        {C, V, D},
        set(),
        False,
    ),
    # Télésoin is not telemedicine: the CNOM profile asks nothing of it.
    (
        act("TELESOIN", "OTHER_PRIVATE_PROVIDER", in_parcours=False),
        date(2026, 1, 1),
        [CNOM_84],
        N,
        set(),
        set(),
        True,
    ),
    # A region that published "national" gets the national answer, naming its version.
    (act(in_parcours=False), date(2026, 1, 1), [NATIONAL_93], N, set(), set(), True),
]


@pytest.mark.parametrize(
    ("activity", "on", "versions", "requirement", "obligations", "codes", "confirmed"), TABLE
)
def test_the_policy_table(
    activity: Activity,
    on: date,
    versions: list[RegionPolicy],
    requirement: str,
    obligations: set[str],
    codes: set[str],
    confirmed: bool,
) -> None:
    evaluation = evaluate(activity, on, region_policy_on(versions, on))
    assert evaluation.requirement == requirement
    assert evaluation.obligations == obligations
    assert codes <= {r.code for r in evaluation.reasons}
    assert evaluation.confirmed is confirmed
    # Every answer explains itself with a legal source, and every obligation has its reason.
    assert evaluation.reasons and all(r.text and r.source for r in evaluation.reasons)
    assert {r.obligation for r in evaluation.reasons if r.obligation} == obligations
    assert evaluation.regime == ("DECRET_2010" if on < date(2018, 9, 15) else "DROIT_COMMUN_2018")


def test_the_region_version_in_force_is_named_in_the_answer() -> None:
    in_force = region_policy_on([NATIONAL_93], date(2026, 1, 1))
    assert evaluate(act(), date(2026, 1, 1), in_force).region_policy == "regions/93/contractPolicies/1"
    assert evaluate(act(), date(2026, 1, 1), None).region_policy == ""


def test_a_cnom_region_before_2018_adds_the_visa_to_the_2010_contract() -> None:
    early = RegionPolicy(region="84", version=1, effective_from=date(2016, 6, 1), profile=Profile.CNOM_2016)
    evaluation = evaluate(act(in_parcours=False), date(2017, 1, 1), early)
    assert evaluation.requirement == VISA and evaluation.regime == "DECRET_2010"


def test_a_region_may_narrow_the_commercial_offers_of_the_cnom_profile() -> None:
    narrow = RegionPolicy(
        region="84",
        version=2,
        effective_from=date(2026, 1, 1),
        profile=Profile.CNOM_2016,
        cnom_offerers=frozenset({"COMPLEMENTARY_INSURER"}),
    )
    company = evaluate(act(offerer="TELECONSULTATION_COMPANY"), date(2026, 2, 1), narrow)
    assert company.requirement == N and company.obligations == {A}
    insurer = evaluate(act(offerer="COMPLEMENTARY_INSURER"), date(2026, 2, 1), narrow)
    assert insurer.requirement == VISA


def test_no_regime_before_the_2010_decret() -> None:
    with pytest.raises(PolicyRefusal) as refused:
        evaluate(act(), date(2010, 10, 18), None)
    assert refused.value.reason == "NO_POLICY_IN_FORCE"


def test_a_region_version_not_yet_in_force_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="not in force"):
        evaluate(act(), date(2024, 1, 1), CNOM_84)


def test_an_unknown_activity_is_refused() -> None:
    with pytest.raises(ValueError, match="offerer"):
        Activity(act_type="TELECONSULTATION", offerer="PHARMA_LAB", in_parcours=True, experimental=False)
    with pytest.raises(ValueError, match="act_type"):
        Activity(act_type="TLS", offerer="ESTABLISHMENT", in_parcours=True, experimental=False)


# --- publishing region versions ---------------------------------------------------------------------------


def test_versions_are_numbered_and_the_one_in_force_is_the_latest_started() -> None:
    today = date(2026, 3, 1)
    first = next_region_version([], region="84", effective_from=today, profile=Profile.NATIONAL, today=today)
    second = next_region_version(
        [first], region="84", effective_from=date(2026, 6, 1), profile=Profile.CNOM_2016, today=today
    )
    assert (first.version, second.version) == (1, 2)
    assert region_policy_on([first, second], date(2026, 5, 31)) == first
    assert region_policy_on([first, second], date(2026, 6, 1)) == second
    assert region_policy_on([first, second], date(2026, 2, 28)) is None
    # Another region's versions do not count.
    other = next_region_version(
        [first, second], region="93", effective_from=today, profile=Profile.NATIONAL, today=today
    )
    assert other.version == 1


@pytest.mark.parametrize(
    ("effective_from", "reason"),
    [
        (date(2026, 2, 28), "POLICY_EFFECTIVE_DATE_IN_PAST"),
        (date(2026, 6, 1), "POLICY_VERSION_NOT_LATEST"),
        (date(2026, 5, 1), "POLICY_VERSION_NOT_LATEST"),
    ],
)
def test_a_new_version_never_rewrites_a_date_already_decided(effective_from: date, reason: str) -> None:
    today = date(2026, 3, 1)
    published = [
        RegionPolicy(region="84", version=1, effective_from=date(2026, 6, 1), profile=Profile.NATIONAL)
    ]
    with pytest.raises(PolicyRefusal) as refused:
        next_region_version(
            published, region="84", effective_from=effective_from, profile=Profile.CNOM_2016, today=today
        )
    assert refused.value.reason == reason


# --- the data file ---------------------------------------------------------------------------------------


def test_the_data_file_holds_every_regime_rule_and_clock_with_its_source() -> None:
    data = read_data_file()
    assert [r.code for r in data.regimes] == ["DECRET_2010", "DROIT_COMMUN_2018"]
    assert data.regimes[0].effective_from == date(2010, 10, 19)
    assert data.regimes[1].effective_from == date(2018, 9, 15)
    agrement = data.clock_on("agrement", date(2026, 1, 1))
    assert (agrement.period_months, agrement.decision) == (4, "ACCEPTANCE")
    # The sources conflict on the agrément's renewal: the value is flagged, and it is a dated parameter.
    validity = data.agrement_validity_on(date(2026, 1, 1))
    assert validity.validity_months == 24 and not validity.confirmed
    assert not data.cnom_2016.confirmed


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("effective_to = 2018-09-14", "effective_to = 2018-09-15"), "two versions in force"),
        (("effective_to = 2018-09-14", "effective_to = 2018-09-13"), "a gap"),
        (("effective_from = 2010-10-19", 'effective_from = "2010-10-19"'), "is not a date"),
        (('"COMPLEMENTARY_INSURER", "OTHER', '"PHARMA_LAB", "OTHER'), "unknown offerers"),
        (('decision = "ACCEPTANCE"', 'decision = "MAYBE"'), "ACCEPTANCE or REJECTION"),
        (('code = "ETAPES_EXEMPTION"', 'code = "ETAPES_EXEMPTION"\ncolour = "red"'), "unknown keys"),
    ],
)
def test_a_malformed_data_file_is_refused_with_its_problem(change: tuple[str, str], problem: str) -> None:
    text = DATA_FILE.read_text(encoding="utf-8")
    assert change[0] in text
    with pytest.raises(PolicyError, match=problem):
        parse(text.replace(change[0], change[1], 1))
