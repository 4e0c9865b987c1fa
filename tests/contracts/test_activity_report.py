"""GetCaseActivityReport: the casework's activity in one call, saying what the paged lists say for the same
caller (cases by kind and state, decision lead times per month, expirations per day), in the caller's scope
only, with bad input refused naming the field."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta

import grpc
from google.type import date_pb2
from parcours.contracts.v1 import contracts_pb2 as c

from services.contracts import clock
from tests.contracts.conftest import ALICE, DG, PACA_OFFICER, PROMOTER, Caller, Hub, new_contract, rid
from tests.support.calls import call, details

PARIS = "Europe/Paris"
TODAY = clock.local_date(datetime.now(UTC), PARIS)
THIS_MONTH = date_pb2.Date(year=TODAY.year, month=TODAY.month)


def report_request(**fields: object) -> c.GetCaseActivityReportRequest:
    return c.GetCaseActivityReportRequest(start_month=THIS_MONTH, end_month=THIS_MONTH, **fields)  # type: ignore[arg-type]


async def listed(caller: Caller) -> list[c.CaseSummary]:
    found: list[c.CaseSummary] = []
    request = c.ListCasesRequest(tab=c.TAB_ALL, include_closed=True, page_size=500)
    while True:
        reply = await caller.ListCases(request)
        found += reply.cases
        if not reply.next_page_token:
            return found
        request.page_token = reply.next_page_token


async def lead_days_this_month(caller: Caller) -> list[float]:
    """Creation → decision, in days, of the cases decided this month, from the paged lists of every kind an
    officer sees (an agrément is national: no region's)."""
    days: list[float] = []
    for rpc, field, request_class in (
        ("ListArsContracts", "ars_contracts", c.ListArsContractsRequest),
        ("ListOperatorDeclarations", "operator_declarations", c.ListOperatorDeclarationsRequest),
        (
            "ListIntermediaryContractReviews",
            "intermediary_contract_reviews",
            c.ListIntermediaryContractReviewsRequest,
        ),
    ):
        token = ""
        while True:
            reply = await getattr(caller, rpc)(request_class(page_size=500, page_token=token))
            for case in getattr(reply, field):
                if case.progress.HasField("decide_time"):
                    decided = case.progress.decide_time.ToDatetime(tzinfo=UTC)
                    local = clock.local_date(decided, PARIS)
                    if (local.year, local.month) == (TODAY.year, TODAY.month):
                        created = case.create_time.ToDatetime(tzinfo=UTC)
                        days.append((decided - created).total_seconds() / 86400)
            token = reply.next_page_token
            if not token:
                break
    return days


async def filed(hub: Hub, end_in_days: int = 400) -> str:
    promoter = hub.stub(PROMOTER)
    created = (
        await promoter.CreateArsContract(
            new_contract(start=TODAY + timedelta(days=1), end=TODAY + timedelta(days=end_in_days))
        )
    ).ars_contract
    await promoter.SubmitArsContract(c.SubmitArsContractRequest(request_id=rid(), name=created.name))
    return str(created.name)


async def test_the_report_says_what_the_lists_say_for_the_same_caller(hub: Hub) -> None:
    alice, dg = hub.stub(ALICE), hub.stub(DG)
    # One contract left submitted, one rejected, one approved and signed, ending in 60 days.
    await filed(hub)
    rejected = await filed(hub)
    await alice.RejectArsContract(
        c.RejectArsContractRequest(request_id=rid(), name=rejected, motivation="Hors du champ de l'ARS")
    )
    signed = await filed(hub, end_in_days=60)
    await alice.MarkArsContractComplete(c.MarkArsContractCompleteRequest(request_id=rid(), name=signed))
    await alice.ApproveArsContract(c.ApproveArsContractRequest(request_id=rid(), name=signed))
    await dg.PreviewCaseDecision(
        c.PreviewCaseDecisionRequest(request_id=rid(), parent=signed, kind=c.DECISION_KIND_CONTRACT_APPROVAL)
    )
    active = (await dg.SignArsContract(c.SignArsContractRequest(request_id=rid(), name=signed))).ars_contract
    assert active.state == c.ArsContract.STATE_ACTIVE

    report = await alice.GetCaseActivityReport(report_request())
    cases = await listed(alice)
    assert {(r.kind, r.state): r.count for r in report.state_counts} == Counter(
        (s.kind, s.state) for s in cases
    )
    assert (c.CASE_KIND_ARS_CONTRACT, "REJECTED") in {(r.kind, r.state) for r in report.state_counts}

    days = await lead_days_this_month(alice)
    [month] = report.lead_times
    assert (month.month.year, month.month.month, month.month.day) == (TODAY.year, TODAY.month, 0)
    assert month.decisions == len(days) >= 2
    assert abs(month.median_lead_time.ToTimedelta().total_seconds() / 86400 - statistics.median(days)) < 2e-5
    p90 = statistics.quantiles(days, n=10, method="inclusive")[-1]
    assert abs(month.p90_lead_time.ToTimedelta().total_seconds() / 86400 - p90) < 2e-5

    # The signed contract ends in 60 days: it is among the expirations of the coming 90 days, not of 30.
    ending = clock.local_date(
        datetime.combine(TODAY + timedelta(days=61), datetime.min.time(), tzinfo=UTC), PARIS
    )
    soon = {(e.expire_date.year, e.expire_date.month, e.expire_date.day): e.count for e in report.expirations}
    assert soon.get((ending.year, ending.month, ending.day), 0) >= 1
    within_30 = await alice.GetCaseActivityReport(report_request(expiring_within_days=30))
    assert all(
        (e.expire_date.year, e.expire_date.month, e.expire_date.day)
        != (ending.year, ending.month, ending.day)
        for e in within_30.expirations
    )


async def test_another_region_s_officer_counts_only_their_region(hub: Hub) -> None:
    await filed(hub)
    paca = hub.stub(PACA_OFFICER)
    report = await paca.GetCaseActivityReport(report_request())
    assert {(r.kind, r.state): r.count for r in report.state_counts} == Counter(
        (s.kind, s.state) for s in await listed(paca)
    )
    # Asking for region 84 answers as for a region without cases.
    theirs = await paca.GetCaseActivityReport(report_request(region="regions/84"))
    assert list(theirs.state_counts) == [] and list(theirs.lead_times) == []


async def test_bad_input_is_refused_naming_the_field(hub: Hub) -> None:
    alice = hub.stub(ALICE)
    backwards = await call(
        alice.GetCaseActivityReport(
            c.GetCaseActivityReportRequest(
                start_month=THIS_MONTH, end_month=date_pb2.Date(year=TODAY.year - 1, month=1)
            )
        )
    )
    assert backwards.code() == grpc.StatusCode.INVALID_ARGUMENT
    missing = await call(alice.GetCaseActivityReport(c.GetCaseActivityReportRequest(end_month=THIS_MONTH)))
    assert "start_month" in {field for field, _ in details(missing)[1]}
    unknown = await call(alice.GetCaseActivityReport(report_request(region="regions/99")))
    assert unknown.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "region" in {field for field, _ in details(unknown)[1]}
