"""Coverage: refused, then accepted once a declaration is effective; contracts, visas and agréments."""

from __future__ import annotations

from datetime import date

from services.contracts.coverage import Holding, check
from services.contracts.policy import Activity, Profile, RegionPolicy, evaluate

CH = "establishments/420000017"
DOCTOR = "practitioners/10000000101"
COMPANY = "teleconsultationCompanies/123456789"
CNOM_84 = RegionPolicy(region="84", version=1, effective_from=date(2025, 1, 1), profile=Profile.CNOM_2016)
MAY = date(2026, 5, 12)


def activity(act_type: str, offerer: str = "ESTABLISHMENT", *, in_parcours: bool = True) -> Activity:
    return Activity(act_type=act_type, offerer=offerer, in_parcours=in_parcours, experimental=False)


def declaration(valid_from: date | None, valid_until: date | None, holder: str = CH) -> Holding:
    return Holding(
        case="operatorDeclarations/d1",
        kind="OPERATOR_DECLARATION",
        holder=holder,
        region="84",
        valid_from=valid_from,
        valid_until=valid_until,
    )


def test_a_telesurveillance_forfait_is_refused_then_covered_once_the_declaration_is_effective() -> None:
    evaluation = evaluate(activity("TELESURVEILLANCE"), MAY, None)
    ask = {"act_type": "TELESURVEILLANCE", "act_date": MAY, "region": "84", "holders": [DOCTOR, CH]}
    refused = check(evaluation, holdings=[], **ask)
    assert not refused.covered and refused.reasons == ["REQUIRES_OPERATOR_DECLARATION"]
    # Declared but acknowledged as effective only from June: still refused in May.
    later = check(evaluation, holdings=[declaration(date(2026, 6, 1), date(9999, 12, 31))], **ask)
    assert not later.covered
    # Effective from May 1st: covered by that declaration.
    effective = check(evaluation, holdings=[declaration(date(2026, 5, 1), date(9999, 12, 31))], **ask)
    assert effective.covered and effective.obligations[0].covered_by == "operatorDeclarations/d1"
    # Another operator's declaration, or another region's, covers nothing.
    other = declaration(date(2026, 5, 1), date(9999, 12, 31), holder="establishments/930000013")
    assert not check(evaluation, holdings=[other], **ask).covered


def test_a_lapsed_declaration_still_covers_the_acts_before_it_lapsed() -> None:
    evaluation = evaluate(activity("TELESURVEILLANCE"), MAY, None)
    lapsed = declaration(date(2026, 1, 1), date(2026, 5, 31))
    assert check(
        evaluation, act_type="TELESURVEILLANCE", act_date=MAY, region="84", holders=[CH], holdings=[lapsed]
    ).covered
    after = date(2026, 6, 1)
    assert not check(
        evaluate(activity("TELESURVEILLANCE"), after, None),
        act_type="TELESURVEILLANCE",
        act_date=after,
        region="84",
        holders=[CH],
        holdings=[lapsed],
    ).covered


def test_a_cnom_region_needs_a_contract_of_that_activity_with_the_visa() -> None:
    evaluation = evaluate(activity("TELECONSULTATION", in_parcours=False), MAY, CNOM_84)
    ask = {"act_type": "TELECONSULTATION", "act_date": MAY, "region": "84", "holders": [DOCTOR, CH]}
    assert check(evaluation, holdings=[], **ask).reasons == ["REQUIRES_CONTRACT", "REQUIRES_ORDINAL_VISA"]
    contract = Holding(
        case="arsContracts/c1",
        kind="ARS_CONTRACT",
        holder=CH,
        region="84",
        valid_from=date(2026, 1, 1),
        valid_until=date(2028, 12, 31),
        act_type="TELECONSULTATION",
    )
    assert check(evaluation, holdings=[contract], **ask).reasons == ["REQUIRES_ORDINAL_VISA"]
    with_visa = Holding(**{**contract.__dict__, "case": "arsContracts/c2", "visa": True})
    result = check(evaluation, holdings=[contract, with_visa], **ask)
    assert result.covered and {o.covered_by for o in result.obligations} == {"arsContracts/c2"}
    # A contract for téléexpertise does not cover a téléconsultation.
    other_act = Holding(**{**with_visa.__dict__, "act_type": "TELEEXPERTISE"})
    assert not check(evaluation, holdings=[other_act], **ask).covered


def test_a_company_teleconsultation_needs_a_valid_agrement_at_the_act_date() -> None:
    evaluation = evaluate(activity("TELECONSULTATION", "TELECONSULTATION_COMPANY"), MAY, None)
    agrement = Holding(
        case="agrementApplications/a1",
        kind="AGREMENT_APPLICATION",
        holder=COMPANY,
        region="84",
        valid_from=date(2024, 5, 12),
        valid_until=date(2026, 5, 11),
    )
    ask = {"act_type": "TELECONSULTATION", "act_date": MAY, "region": "84", "holders": [DOCTOR, COMPANY]}
    assert check(evaluation, holdings=[agrement], **ask).reasons == ["REQUIRES_AGREMENT"]
    renewed = Holding(
        **{
            **agrement.__dict__,
            "case": "agrementApplications/a2",
            "valid_from": date(2026, 5, 12),
            "valid_until": date(2028, 5, 11),
        }
    )
    assert check(evaluation, holdings=[agrement, renewed], **ask).covered


def test_nothing_required_is_covered() -> None:
    evaluation = evaluate(activity("TELEEXPERTISE"), MAY, None)
    result = check(
        evaluation, act_type="TELEEXPERTISE", act_date=MAY, region="84", holders=[DOCTOR], holdings=[]
    )
    assert result.covered and result.obligations == ()
