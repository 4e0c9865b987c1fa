"""Real contracts cases for the console's tests, filed and moved through the contracts API.

The console calls the suite's contracts service (`contracts_address`). A test that needs durations shorter
than the defaults (a review step due in two seconds) files its cases through a contracts service of its own
(`contracts_hub`, the suite's `case_stack`: its own worker and task queue) with those settings: a case keeps
the durations it was filed with, its rows are in the same schema, and its workflow answers the Updates the
suite's service (hence the console) sends it for as long as the test's worker runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from google.type import money_pb2
from parcours.contracts.v1 import contracts_pb2 as c

from services.console.french import KINDS, STATES, label
from services.contracts.decisions import ensure_dev_signing_identity
from services.contracts.models import DAY
from services.kit.pki import DevPki
from tests.contracts.conftest import (
    CONTRACTS,
    DOCTOR,
    PROMOTER,
    Hub,
    Who,
    eventually,
    new_contract,
    new_declaration,
    rid,
)
from tests.support.stack import CaseStackFactory

SECOND = 1 / DAY  # a second, in the contracts settings' days
# The demo accounts the console signs in (services/devstack/oidc.py), as the contracts service names them.
AGENT84 = Who("staff/agent84", "console", staff="agent84", roles=("ars_officer",), region="84")
AGENT93 = Who("staff/agent93", "console", staff="agent93", roles=("ars_officer",), region="93")
# A colleague of region 84 who did the completeness checks before the review step opened.
COLLEAGUE84 = Who("staff/collegue84", "console", staff="collegue84", roles=("ars_officer",), region="84")

HubFactory = Callable[..., Awaitable[Hub]]


@pytest.fixture
async def contracts_hub(case_stack: CaseStackFactory, pki: DevPki) -> AsyncIterator[HubFactory]:
    """contracts_hub(**settings) → a contracts service and its worker of the test's own (settings such as
    `step_due_days` shorten what people wait for)."""
    cert, key = ensure_dev_signing_identity(pki.directory)
    hubs: list[Hub] = []

    async def make(**overrides: Any) -> Hub:
        stack = await case_stack(
            CONTRACTS,
            settings={"decision_trust_roots_file": pki.ca_file, **overrides},
            worker_settings={"decision_signing_cert_file": cert, "decision_signing_key_file": key},
        )
        hubs.append(Hub(pki, stack.address, stack.settings, stack.client, stack.pool))
        return hubs[-1]

    try:
        yield make
    finally:
        for made in hubs:
            await made.close()


def _today() -> date:
    return datetime.now(UTC).date()


async def contract_under_review(hub: Hub, *, title: str = "Téléconsultation en EHPAD") -> str:
    """A region-84 ARS contract filed and submitted by its promoter (Loire), found complete by a colleague:
    under ARS review, its review step unclaimed. Its name."""
    promoter = hub.stub(PROMOTER)
    created = (
        await promoter.CreateArsContract(
            new_contract(start=_today() + timedelta(days=30), end=_today() + timedelta(days=400), title=title)
        )
    ).ars_contract
    await promoter.SubmitArsContract(c.SubmitArsContractRequest(request_id=rid(), name=created.name))
    complete = await hub.stub(COLLEAGUE84).MarkArsContractComplete(
        c.MarkArsContractCompleteRequest(request_id=rid(), name=created.name)
    )
    assert complete.ars_contract.state == c.ArsContract.STATE_UNDER_REVIEW
    return str(created.name)


async def overdue(hub: Hub, name: str) -> c.ArsContract:
    """The contract once its review step is overdue (its timer fires in the workflow), through the API."""
    officer = hub.stub(AGENT84)

    async def get() -> c.ArsContract:
        return (await officer.GetArsContract(c.GetArsContractRequest(name=name))).ars_contract

    return await eventually(get, lambda contract: contract.progress.current_step.overdue)


async def declaration(hub: Hub, region: str = "84") -> str:
    """A télésurveillance operator's declaration, filed by the Loire establishment: awaiting acknowledgement.
    Its name."""
    reply = await hub.stub(PROMOTER).CreateOperatorDeclaration(new_declaration(region))
    return str(reply.operator_declaration.name)


def caller(pki: DevPki, address: str, who: Who) -> Hub:
    """The contracts service at `address` as `who` reaches it (`.stub(who)`); close it after use."""
    return Hub(pki, address, None, None, None)  # type: ignore[arg-type]


async def cases_by_kind_and_state(pki: DevPki, address: str, who: Who) -> dict[tuple[str, str], int]:
    """What the contracts API lists for `who`, open and closed: (kind, state) in French → number of cases."""
    hub = caller(pki, address, who)
    counts: dict[tuple[str, str], int] = {}
    request = c.ListCasesRequest(tab=c.TAB_ALL, include_closed=True, page_size=500)
    try:
        while True:
            reply = await hub.stub(who).ListCases(request)
            for case in reply.cases:
                key = (KINDS[c.CaseKind.Name(case.kind)], label(STATES, case.state))
                counts[key] = counts.get(key, 0) + 1
            if not reply.next_page_token:
                return counts
            request.page_token = reply.next_page_token
    finally:
        await hub.close()


async def region_93_contract(pki: DevPki, address: str) -> str:
    """A contract of region 93 (département 13) filed and submitted by the Loire establishment."""
    hub = caller(pki, address, PROMOTER)
    try:
        promoter = hub.stub(PROMOTER)
        created = (
            await promoter.CreateArsContract(
                new_contract(
                    region="93",
                    departement="13",
                    start=_today() + timedelta(days=30),
                    end=_today() + timedelta(days=400),
                )
            )
        ).ars_contract
        await promoter.SubmitArsContract(c.SubmitArsContractRequest(request_id=rid(), name=created.name))
        return str(created.name)
    finally:
        await hub.close()


async def review_for_ordre_42(pki: DevPki, address: str) -> str:
    """A doctor of the Loire asks the Ordre of the Loire (42) to review a contract with an intermediary."""
    hub = caller(pki, address, DOCTOR)
    try:
        reply = await hub.stub(DOCTOR).CreateIntermediaryContractReview(
            c.CreateIntermediaryContractReviewRequest(
                request_id=rid(),
                intermediary_contract_review=c.IntermediaryContractReview(
                    region="regions/84",
                    territory="42",
                    company_siren="912345678",
                    company_name="MédiConsult SAS",
                    offer="Téléconsultations non programmées en soirée pour les abonnés d'une mutuelle.",
                    remuneration_per_act=money_pb2.Money(currency_code="EUR", units=18),
                ),
            )
        )
        return str(reply.intermediary_contract_review.name)
    finally:
        await hub.close()


async def contract_84(pki: DevPki, address: str) -> str:
    hub = caller(pki, address, AGENT84)
    try:
        return await contract_under_review(hub, title="Télésurveillance en EHPAD, Roanne")
    finally:
        await hub.close()
