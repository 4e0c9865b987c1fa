"""What the inbox asks the contracts service for a set of filters, and which decisions a case page offers:
the console's own logic, checked without the service (its answers are tested end to end once it lands)."""

from __future__ import annotations

from urllib.parse import parse_qs

from parcours.contracts.v1 import contracts_pb2

from services.console.cases import CaseView, available_actions, may_claim, may_release
from services.console.inbox import InboxQuery
from services.console.security import Officer

AGENT = Officer("staff:agent84", "Camille Roche", ("ars_officer",), "84", None)
CHEFFE = Officer("staff:cheffe84", "Hélène Marchand", ("ars_officer", "ars_supervisor"), "84", None)
DG = Officer("staff:dg84", "Anne Lefort", ("ars_signatory",), "84", None)
ORDRE = Officer("staff:ordre42", "Paul Vidal", ("ordre_reviewer",), None, "42")


def parse(query: str) -> InboxQuery:
    return InboxQuery.parse({k: v[-1] for k, v in parse_qs(query).items()}, parse_qs(query))


def test_filters_become_one_list_request_and_one_count_request_under_the_same_filters() -> None:
    q = parse(
        "onglet=a-echeance&type=CASE_KIND_ARS_CONTRACT&etape=STEP_ARS_REVIEW&ght=ght-loire&departement=42"
        "&etablissement=420000017&attribution=personne&en-retard=1&expire-sous=90&tri=fin-de-validite"
    )
    assert q.errors == {}
    listed, counted = q.list_request(), q.count_request()
    assert listed.tab == contracts_pb2.TAB_DUE_SOON
    assert listed.order_by == contracts_pb2.CASE_ORDER_EXPIRE_TIME
    for request in (listed, counted):
        assert list(request.kinds) == [contracts_pb2.CASE_KIND_ARS_CONTRACT]
        assert list(request.steps) == [contracts_pb2.STEP_ARS_REVIEW]
        assert request.ght == "ghts/ght-loire"
        assert request.establishment == "establishments/420000017"
        assert request.assignment == contracts_pb2.ASSIGNMENT_UNCLAIMED
        assert request.overdue_only
        assert request.expiring_within_days == 90


def test_a_saved_views_query_string_gives_back_the_same_filters() -> None:
    q = parse("onglet=suivis&type=CASE_KIND_OPERATOR_DECLARATION&etat=DECLARED&echeance-avant=2026-12-31")
    again = parse(q.query_string())
    assert again.list_request() == q.list_request()
    # The due date is midnight in Paris, as the officer means it.
    assert q.list_request().due_before.ToDatetime().isoformat() == "2026-12-30T23:00:00"


def test_filters_not_understood_are_named_and_nothing_is_asked() -> None:
    q = parse("onglet=nulle-part&departement=999&etablissement=12&expire-sous=0&echeance-avant=demain")
    assert set(q.errors) == {"onglet", "departement", "etablissement", "expire-sous", "echeance-avant"}


def _contract(state: str, step: int, claimant: str = "") -> CaseView:
    case = contracts_pb2.ArsContract(
        name="arsContracts/00000000-0000-4000-8000-000000000001",
        state=contracts_pb2.ArsContract.State.Value(f"STATE_{state}"),
        region="regions/84",
        version=4,
    )
    if step:
        role = {
            contracts_pb2.STEP_ARS_REVIEW: "ROLE_ARS_OFFICER",
            contracts_pb2.STEP_SIGNATURE: "ROLE_ARS_SIGNATORY",
            contracts_pb2.STEP_ORDINAL_VISA: "ROLE_ORDRE_REVIEWER",
        }[step]
        from parcours.options.v1 import options_pb2

        case.progress.current_step.step = step
        case.progress.current_step.candidate_role = options_pb2.Role.Value(role)
        case.progress.current_step.claimant = claimant
    return CaseView(
        "CASE_KIND_ARS_CONTRACT",
        "arsContracts",
        "00000000-0000-4000-8000-000000000001",
        case.name,
        case,
        state,
    )


def keys(view: CaseView, officer: Officer) -> set[str]:
    return {a.key for a in available_actions(view, officer)}


def test_each_role_is_offered_only_the_decisions_of_its_step() -> None:
    review = _contract("UNDER_REVIEW", contracts_pb2.STEP_ARS_REVIEW)
    assert keys(review, AGENT) == {"approve", "reject", "request-changes"}
    assert keys(review, DG) == set()
    assert keys(review, ORDRE) == set()
    signature = _contract("AWAITING_SIGNATURE", contracts_pb2.STEP_SIGNATURE)
    assert keys(signature, DG) == {"sign"}
    assert keys(signature, AGENT) == set()
    visa = _contract("AWAITING_VISA", contracts_pb2.STEP_ORDINAL_VISA)
    assert keys(visa, ORDRE) == {"give-visa", "refuse-visa"}
    assert keys(visa, AGENT) == set()
    assert keys(_contract("REJECTED", 0), AGENT) == set()


def test_a_step_held_by_someone_else_offers_no_decision_and_only_a_supervisor_may_release_it() -> None:
    held = _contract("UNDER_REVIEW", contracts_pb2.STEP_ARS_REVIEW, claimant="staff/agent84b")
    assert keys(held, AGENT) == set()
    assert not may_claim(held, AGENT)
    assert not may_release(held, AGENT)
    assert may_release(held, CHEFFE)
    mine = _contract("UNDER_REVIEW", contracts_pb2.STEP_ARS_REVIEW, claimant="staff/agent84")
    assert keys(mine, AGENT) == {"approve", "reject", "request-changes"}
    assert may_release(mine, AGENT)
    free = _contract("UNDER_REVIEW", contracts_pb2.STEP_ARS_REVIEW)
    assert may_claim(free, AGENT)
    assert not may_claim(free, DG)
