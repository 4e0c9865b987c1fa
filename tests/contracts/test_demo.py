"""`make run`'s demo contracts cases, loaded through the API as the orchestrator loads them: every state a
case reaches on the day it is filed is there for region 84's officers, a second load changes nothing."""

from __future__ import annotations

from parcours.contracts.v1 import contracts_pb2 as c

from services.contracts.demo import Demo, load
from services.kit.pki import DevPki


async def test_the_demo_fills_every_state_and_loads_once(pki: DevPki, contracts_address: str) -> None:
    demo = Demo(pki.directory, contracts_address)
    try:
        assert await load(demo) == 30
        assert await load(demo) == 0  # already there: left as it is
        officer = demo.staff("claire.ars84", "ars_officer", region="84")
        operator = demo.staff("dgos", "hub_operator")
        cases = (await officer.ListCases(c.ListCasesRequest(include_closed=True, page_size=500))).cases
        states = {(x.kind, x.state) for x in cases if x.region == "regions/84"}
        contracts = {s for k, s in states if k == c.CASE_KIND_ARS_CONTRACT}
        assert contracts >= {
            "DRAFT",
            "SUBMITTED",
            "AWAITING_DOCUMENTS",
            "UNDER_REVIEW",
            "CHANGES_REQUESTED",
            "AWAITING_SIGNATURE",
            "ACTIVE",
            "REJECTED",
            "WITHDRAWN",
            "TERMINATED",
        }
        open_only = (await officer.ListCases(c.ListCasesRequest(page_size=500))).cases
        assert {x.state for x in open_only}.isdisjoint({"REJECTED", "WITHDRAWN", "TERMINATED"})
        declarations = {s for k, s in states if k == c.CASE_KIND_OPERATOR_DECLARATION}
        assert declarations >= {
            "DECLARED",
            "AWAITING_DOCUMENTS",
            "ACKNOWLEDGED",
            "EFFECTIVE",
            "REJECTED",
            "WITHDRAWN",
            "LAPSED",
        }
        reviews = {s for k, s in states if k == c.CASE_KIND_INTERMEDIARY_CONTRACT_REVIEW}
        assert reviews >= {"UNDER_REVIEW", "CHANGES_REQUESTED", "VISA_GIVEN", "VISA_REFUSED", "WITHDRAWN"}
        # One contract expires within 90 days; one review under way has a failing clause.
        expiring = (await officer.ListCases(c.ListCasesRequest(expiring_within_days=90, page_size=500))).cases
        assert any(x.kind == c.CASE_KIND_ARS_CONTRACT for x in expiring)
        under_review = (
            await officer.ListIntermediaryContractReviews(
                c.ListIntermediaryContractReviewsRequest(
                    state=c.IntermediaryContractReview.STATE_UNDER_REVIEW
                )
            )
        ).intermediary_contract_reviews
        assert any(
            clause.status == c.CLAUSE_STATUS_NOT_SATISFIED
            for review in under_review
            for clause in review.clauses
        )
        agrements = (
            await operator.ListAgrementApplications(c.ListAgrementApplicationsRequest(page_size=500))
        ).agrement_applications
        assert {a.state for a in agrements} >= {
            c.AgrementApplication.STATE_FILED,
            c.AgrementApplication.STATE_AWAITING_DOCUMENTS,
            c.AgrementApplication.STATE_GRANTED,
            c.AgrementApplication.STATE_REFUSED,
            c.AgrementApplication.STATE_WITHDRAWN,
        }
        # Region 93 on the CNOM 2016 profile: a contract awaits the Ordre's visa, another was refused it.
        ordre_13 = demo.staff("cdom13", "ordre_reviewer", territory="13")
        routed = (await ordre_13.ListCases(c.ListCasesRequest(include_closed=True, page_size=500))).cases
        assert {x.state for x in routed} >= {"AWAITING_VISA", "VISA_REFUSED"}
    finally:
        await demo.close()
