"""The contract-requirement policy through the RPC: each regime × activity × date boundary, a region on the
CNOM 2016 profile from the day it publishes it, and publishing rules (never the past, never before the latest,
only one's own region, idempotent, audited)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg
import grpc
import pytest
from parcours.billing.v1 import billing_pb2 as b
from parcours.contracts.v1 import contracts_pb2 as c

from tests.contracts.conftest import ALICE, DOCTOR, PACA_OFFICER, Hub, Who, activity, pb_date, rid
from tests.support.calls import call, details

TODAY = datetime.now(UTC).date()
OCCITANIE = Who("staff/occitanie", "console", staff="occitanie", roles=("ars_officer",), region="76")
TLC, TS, TLE, TELESOIN, TELECONSEIL = (
    b.ACT_TYPE_TELECONSULTATION,
    b.ACT_TYPE_TELESURVEILLANCE,
    b.ACT_TYPE_TELEEXPERTISE,
    b.ACT_TYPE_TELESOIN,
    b.ACT_TYPE_TELECONSEIL,
)
NONE = c.REQUIREMENT_NONE
DECLARATION = c.REQUIREMENT_DECLARATION_REQUIRED
CONTRACT = c.REQUIREMENT_CONTRACT_REQUIRED
VISA = c.REQUIREMENT_CONTRACT_WITH_ORDINAL_VISA_REQUIRED

# (act, offerer, in parcours, experimental, date, requirement, regime) under the national regime (region 84).
NATIONAL = [
    (TLC, c.OFFERER_ESTABLISHMENT, True, False, date(2010, 10, 19), CONTRACT, c.REGIME_DECRET_2010),
    (TLE, c.OFFERER_LIBERAL_PRACTITIONER, True, False, date(2018, 9, 14), CONTRACT, c.REGIME_DECRET_2010),
    (TLC, c.OFFERER_ESTABLISHMENT, True, True, date(2015, 6, 1), NONE, c.REGIME_DECRET_2010),  # ETAPES
    (TELESOIN, c.OFFERER_LIBERAL_PRACTITIONER, True, False, date(2016, 1, 1), NONE, c.REGIME_DECRET_2010),
    (TLC, c.OFFERER_ESTABLISHMENT, True, False, date(2018, 9, 15), NONE, c.REGIME_DROIT_COMMUN_2018),
    (TLC, c.OFFERER_COMPLEMENTARY_INSURER, False, False, date(2025, 1, 1), NONE, c.REGIME_DROIT_COMMUN_2018),
    (TS, c.OFFERER_ESTABLISHMENT, True, False, date(2023, 6, 30), NONE, c.REGIME_DROIT_COMMUN_2018),
    (TS, c.OFFERER_ESTABLISHMENT, True, False, date(2023, 7, 1), DECLARATION, c.REGIME_DROIT_COMMUN_2018),
    (
        TELECONSEIL,
        c.OFFERER_OTHER_PRIVATE_PROVIDER,
        False,
        False,
        date(2012, 1, 1),
        NONE,
        c.REGIME_DECRET_2010,
    ),
]


@pytest.mark.parametrize(
    ("act", "offerer", "in_parcours", "experimental", "day", "requirement", "regime"), NATIONAL
)
async def test_the_national_regime_at_its_date_boundaries(
    hub: Hub,
    act: int,
    offerer: int,
    in_parcours: bool,
    experimental: bool,
    day: date,
    requirement: int,
    regime: int,
) -> None:
    reply = await hub.stub(DOCTOR).EvaluateActivity(
        c.EvaluateActivityRequest(
            activity=activity(act, offerer, in_parcours=in_parcours, experimental=experimental),
            date=pb_date(day),
            region="regions/84",
        )
    )
    found = reply.evaluation
    assert (found.requirement, found.regime) == (requirement, regime)
    assert found.reasons and all(r.source for r in found.reasons)
    assert found.region_policy == ""


async def test_no_regime_before_the_2010_decret(hub: Hub) -> None:
    refused = await call(
        hub.stub(DOCTOR).EvaluateActivity(
            c.EvaluateActivityRequest(
                activity=activity(), date=pb_date(date(2010, 10, 18)), region="regions/84"
            )
        )
    )
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(refused)[0].reason == "NO_POLICY_IN_FORCE"  # type: ignore[union-attr]


async def test_a_company_offering_teleconsultations_needs_its_agrement(hub: Hub) -> None:
    reply = await hub.stub(ALICE).EvaluateActivity(
        c.EvaluateActivityRequest(
            activity=activity(TLC, c.OFFERER_TELECONSULTATION_COMPANY),
            date=pb_date(TODAY),
            region="regions/84",
        )
    )
    assert c.OBLIGATION_AGREMENT in reply.evaluation.obligations
    assert reply.evaluation.requirement == NONE  # the agrément is reported beside the requirement


async def test_a_region_on_the_cnom_2016_profile_from_the_day_it_publishes_it(
    hub: Hub, paca_follows_cnom: c.RegionPolicy, pool: asyncpg.Pool
) -> None:
    """Region 93 published CNOM 2016 effective today (session fixture): before, the national regime."""
    assert paca_follows_cnom.name == "regions/93/contractPolicies/1"
    assert paca_follows_cnom.publisher == PACA_OFFICER.name
    evaluate = hub.stub(DOCTOR).EvaluateActivity
    outside = activity(TLC, c.OFFERER_LIBERAL_PRACTITIONER, in_parcours=False)
    yesterday = (
        await evaluate(
            c.EvaluateActivityRequest(
                activity=outside, date=pb_date(TODAY - timedelta(days=1)), region="regions/93"
            )
        )
    ).evaluation
    assert (yesterday.requirement, yesterday.region_policy) == (NONE, "")
    today = (
        await evaluate(c.EvaluateActivityRequest(activity=outside, date=pb_date(TODAY), region="regions/93"))
    ).evaluation
    assert (today.requirement, today.region_policy) == (VISA, paca_follows_cnom.name)
    assert set(today.obligations) == {c.OBLIGATION_CONTRACT, c.OBLIGATION_ORDINAL_VISA}
    assert any(r.code == "CNOM_2016_CONTRACT_WITH_VISA" for r in today.reasons)
    # An in-parcours activity of an establishment triggers nothing, on the same profile.
    inside = (
        await evaluate(
            c.EvaluateActivityRequest(activity=activity(), date=pb_date(TODAY), region="regions/93")
        )
    ).evaluation
    assert inside.requirement == NONE and inside.region_policy == paca_follows_cnom.name
    # The version is listed and readable by anyone; it can never be edited, even by the database's owner role.
    listed = hub.stub(DOCTOR).ListPolicyVersions
    versions = (await listed(c.ListPolicyVersionsRequest(parent="regions/93"))).region_policies
    assert [v.name for v in versions] == [paca_follows_cnom.name]
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pool.execute("UPDATE contracts.region_policies SET profile = 'NATIONAL' WHERE region = '93'")


async def test_publishing_never_rewrites_the_past_and_belongs_to_the_region(
    hub: Hub, pool: asyncpg.Pool
) -> None:
    occitanie = hub.stub(OCCITANIE)

    def version(day: date, profile: int = c.RegionPolicy.PROFILE_CNOM_2016) -> c.PublishPolicyVersionRequest:
        return c.PublishPolicyVersionRequest(
            request_id=rid(),
            parent="regions/76",
            region_policy=c.RegionPolicy(
                effective_date=pb_date(day), profile=profile, note="Délibération ARS"
            ),
        )

    past = await call(occitanie.PublishPolicyVersion(version(TODAY - timedelta(days=1))))
    assert details(past)[0].reason == "POLICY_EFFECTIVE_DATE_IN_PAST"  # type: ignore[union-attr]
    not_mine = await call(hub.stub(ALICE).PublishPolicyVersion(version(TODAY + timedelta(days=10))))
    assert not_mine.code() == grpc.StatusCode.PERMISSION_DENIED
    assert details(not_mine)[0].reason == "REGION_NOT_CALLERS"  # type: ignore[union-attr]
    not_an_officer = await call(hub.stub(DOCTOR).PublishPolicyVersion(version(TODAY + timedelta(days=10))))
    assert details(not_an_officer)[0].reason == "ROLE_REQUIRED"  # type: ignore[union-attr]

    first = version(TODAY + timedelta(days=10))
    published = (await occitanie.PublishPolicyVersion(first)).region_policy
    assert (published.version, published.name) == (1, "regions/76/contractPolicies/1")
    # A retry answers the same version; the same id for another version is refused.
    assert (await occitanie.PublishPolicyVersion(first)).region_policy == published
    reused = c.PublishPolicyVersionRequest()
    reused.CopyFrom(version(TODAY + timedelta(days=20)))
    reused.request_id = first.request_id
    assert details(await call(occitanie.PublishPolicyVersion(reused)))[0].reason == "REQUEST_ID_REUSED"  # type: ignore[union-attr]
    before = await call(occitanie.PublishPolicyVersion(version(TODAY + timedelta(days=5))))
    assert details(before)[0].reason == "POLICY_VERSION_NOT_LATEST"  # type: ignore[union-attr]
    second = (
        await occitanie.PublishPolicyVersion(
            version(TODAY + timedelta(days=30), c.RegionPolicy.PROFILE_NATIONAL)
        )
    ).region_policy
    assert second.version == 2
    got = await hub.stub(DOCTOR).GetPolicyVersion(c.GetPolicyVersionRequest(name=second.name))
    assert got.region_policy == second
    missing = await call(
        hub.stub(DOCTOR).GetPolicyVersion(c.GetPolicyVersionRequest(name="regions/76/contractPolicies/9"))
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    # Publishing is audited.
    audited = await pool.fetchval(
        "SELECT count(*) FROM audit.events WHERE method LIKE '%/PublishPolicyVersion' AND resource = $1",
        published.name,
    )
    assert audited >= 1
