"""Cases that live for months and years, on Temporal's time-skipping test server: the ministers' silence on an
agrément (suspended by a request for documents, restarted once the file is complete), renewal reminders, an
amendment and the expiry of a contract, and a five-year contract renewed every year through continue-as-new
with a bounded history and search attributes that stay right."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta

from parcours.contracts.v1 import contracts_pb2 as c
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.testing import WorkflowEnvironment

from services.contracts import clock
from tests.contracts.conftest import (
    ALICE,
    BILLING,
    DG,
    OPERATOR,
    PROMOTER,
    Hub,
    HubFactory,
    Who,
    activity,
    new_contract,
    pb_date,
    rid,
)

DAY = timedelta(days=1)


def day_of(value: object) -> date:
    return date(value.year, value.month, value.day)  # type: ignore[attr-defined]


async def described(hub: Hub, workflow_id: str) -> tuple[str, dict[str, object]]:
    """(run id, Parcours search attributes) of a workflow's current run, read raw: the time-skipping test
    server reads an unset Datetime attribute back as a null, which the SDK's describe() cannot decode."""
    reply = await hub.client.workflow_service.describe_workflow_execution(
        DescribeWorkflowExecutionRequest(
            namespace=hub.client.namespace, execution=WorkflowExecution(workflow_id=workflow_id)
        )
    )
    info = reply.workflow_execution_info
    attributes = {
        key: json.loads(payload.data)
        for key, payload in info.search_attributes.indexed_fields.items()
        if key.startswith("Parcours") and payload.data not in (b"", b"null")
    }
    return info.execution.run_id, attributes


async def kinds(hub: Hub, name: str, who: Who = ALICE) -> list[int]:
    events = (await hub.stub(who).ListCaseEvents(c.ListCaseEventsRequest(parent=name, page_size=500))).events
    return [e.kind for e in events]


async def active_contract(hub: Hub, start: date, end: date) -> c.ArsContract:
    promoter, alice, dg = hub.stub(PROMOTER), hub.stub(ALICE), hub.stub(DG)
    name = (
        await promoter.CreateArsContract(
            new_contract(start=start, end=end, activity=activity(in_parcours=False))
        )
    ).ars_contract.name
    await promoter.SubmitArsContract(c.SubmitArsContractRequest(request_id=rid(), name=name))
    await alice.MarkArsContractComplete(c.MarkArsContractCompleteRequest(request_id=rid(), name=name))
    await alice.ApproveArsContract(c.ApproveArsContractRequest(request_id=rid(), name=name))
    await dg.PreviewCaseDecision(
        c.PreviewCaseDecisionRequest(request_id=rid(), parent=name, kind=c.DECISION_KIND_CONTRACT_APPROVAL)
    )
    return (await dg.SignArsContract(c.SignArsContractRequest(request_id=rid(), name=name))).ars_contract


async def change(hub: Hub, name: str, kind: int, propose: object) -> c.ArsContract:
    """Propose (an amendment or a renewal), approve, preview and sign it."""
    alice, dg = hub.stub(ALICE), hub.stub(DG)
    await propose  # type: ignore[misc]
    await alice.ApproveArsContractChange(c.ApproveArsContractChangeRequest(request_id=rid(), name=name))
    await dg.PreviewCaseDecision(c.PreviewCaseDecisionRequest(request_id=rid(), parent=name, kind=kind))
    return (
        await dg.SignArsContractChange(c.SignArsContractChangeRequest(request_id=rid(), name=name))
    ).ars_contract


async def test_silence_means_acceptance_once_the_legal_clock_runs_out(
    make_skipping_hub: HubFactory, skipping: WorkflowEnvironment
) -> None:
    hub = await make_skipping_hub()
    operator = hub.stub(OPERATOR)
    siren = f"8{uuid.uuid4().int % 10**8:08d}"
    company = f"teleconsultationCompanies/{siren}"
    await operator.CreateTeleconsultationCompany(
        c.CreateTeleconsultationCompanyRequest(
            request_id=rid(),
            teleconsultation_company=c.TeleconsultationCompany(
                name=company, legal_name="Docteur Partout SAS"
            ),
        )
    )
    filed = (
        await operator.CreateAgrementApplication(
            c.CreateAgrementApplicationRequest(
                request_id=rid(), agrement_application=c.AgrementApplication(company=company)
            )
        )
    ).agrement_application
    first_deadline = day_of(filed.progress.legal_clock.decision_date)
    await operator.RequestAgrementDocuments(
        c.RequestAgrementDocumentsRequest(
            request_id=rid(), name=filed.name, motivation="Pièces manquantes", items=["Statuts de la société"]
        )
    )

    # Five months pass while the company has not completed its file: silence decides nothing.
    await skipping.sleep(timedelta(days=150))
    waiting = (
        await operator.GetAgrementApplication(c.GetAgrementApplicationRequest(name=filed.name))
    ).agrement_application
    assert waiting.state == c.AgrementApplication.STATE_AWAITING_DOCUMENTS

    # The file is completed: the four months restart from the next day.
    completed = (
        await operator.CompleteAgrementDocuments(
            c.CompleteAgrementDocumentsRequest(request_id=rid(), name=filed.name)
        )
    ).agrement_application
    restarted = day_of(completed.progress.legal_clock.decision_date)
    assert restarted > first_deadline + timedelta(days=140)
    # Up to an hour before silence takes effect (00:00 in Paris that day), nothing; an hour after, granted.
    completed_at = completed.update_time.ToDatetime(tzinfo=UTC)
    silence = clock.start_of_day(restarted, "Europe/Paris")
    await skipping.sleep(silence - completed_at - timedelta(hours=1))
    assert (
        await operator.GetAgrementApplication(c.GetAgrementApplicationRequest(name=filed.name))
    ).agrement_application.state == c.AgrementApplication.STATE_FILED
    await skipping.sleep(timedelta(hours=2))
    granted = (
        await operator.GetAgrementApplication(c.GetAgrementApplicationRequest(name=filed.name))
    ).agrement_application
    assert granted.state == c.AgrementApplication.STATE_GRANTED_BY_SILENCE
    assert day_of(granted.start_date) == restarted
    assert c.EVENT_KIND_GRANTED_BY_SILENCE in await kinds(hub, filed.name, OPERATOR)
    register = (
        await operator.GetTeleconsultationCompany(c.GetTeleconsultationCompanyRequest(name=company))
    ).teleconsultation_company
    assert [(a.application, a.by_silence) for a in register.agrements] == [(filed.name, True)]


async def test_renewal_reminders_an_amendment_and_the_expiry_of_a_contract(
    make_skipping_hub: HubFactory, skipping: WorkflowEnvironment
) -> None:
    hub = await make_skipping_hub()
    # The test server's clock: earlier tests of the session moved it on.
    today = clock.local_date(await skipping.get_current_time(), "Europe/Paris")
    start, end = today + DAY, today + 200 * DAY
    contract = await active_contract(hub, start, end)
    name = contract.name
    assert contract.state == c.ArsContract.STATE_ACTIVE and day_of(contract.end_date) == end

    # An amendment mid-way, reviewed and signed like the contract.
    amended = await change(
        hub,
        name,
        c.DECISION_KIND_CONTRACT_AMENDMENT,
        hub.stub(PROMOTER).AmendArsContract(
            c.AmendArsContractRequest(
                request_id=rid(), name=name, change_id="avenant-1", summary="Ajout d'un quatrième EHPAD"
            )
        ),
    )
    assert amended.amendment_count == 1 and not amended.HasField("pending_change")
    assert day_of(amended.end_date) == end

    # 90 days before the end, then 30: the promoter and the officers are reminded.
    await skipping.sleep(timedelta(days=112))
    assert (await kinds(hub, name)).count(c.EVENT_KIND_RENEWAL_REMINDER) == 1
    await skipping.sleep(timedelta(days=60))
    assert (await kinds(hub, name)).count(c.EVENT_KIND_RENEWAL_REMINDER) == 2

    # The contract covers its period, then expires.
    def coverage(day: date) -> object:
        return hub.stub(BILLING).CheckCoverage(
            c.CheckCoverageRequest(
                activity=activity(in_parcours=False),
                act_date=pb_date(day),
                region="regions/84",
                establishment=PROMOTER.name,
            )
        )

    await skipping.sleep(timedelta(days=30))
    expired = (await hub.stub(ALICE).GetArsContract(c.GetArsContractRequest(name=name))).ars_contract
    assert expired.state == c.ArsContract.STATE_EXPIRED
    assert c.EVENT_KIND_EXPIRED in await kinds(hub, name)
    assert (await coverage(end)).coverage.obligations == []  # nothing required in region 84's national regime
    holding = await hub.pool.fetchrow(
        "SELECT holding_from, holding_until FROM contracts.cases WHERE case_id = $1",
        uuid.UUID(name.removeprefix("arsContracts/")),
    )
    assert (holding["holding_from"], holding["holding_until"]) == (start, end)


async def test_a_five_year_contract_renewed_every_year_keeps_a_bounded_history(
    make_skipping_hub: HubFactory, skipping: WorkflowEnvironment
) -> None:
    limit = 100
    hub = await make_skipping_hub(contracts_history_limit=limit)
    today = clock.local_date(await skipping.get_current_time(), "Europe/Paris")
    start = today + DAY
    end = clock.add_months(start, 12) - DAY
    contract = await active_contract(hub, start, end)
    name = contract.name
    workflow_id = f"ars-contract-{name.removeprefix('arsContracts/')}"
    first_run, _ = await described(hub, workflow_id)

    for year in range(1, 5):
        await skipping.sleep(timedelta(days=300))
        if year == 2:
            await change(
                hub,
                name,
                c.DECISION_KIND_CONTRACT_AMENDMENT,
                hub.stub(PROMOTER).AmendArsContract(
                    c.AmendArsContractRequest(
                        request_id=rid(), name=name, change_id="avenant-2", summary="Horaires"
                    )
                ),
            )
        end = clock.add_months(start, 12 * (year + 1)) - DAY
        renewed = await change(
            hub,
            name,
            c.DECISION_KIND_CONTRACT_RENEWAL,
            hub.stub(PROMOTER).RenewArsContract(
                c.RenewArsContractRequest(
                    request_id=rid(), name=name, change_id=f"renouvellement-{year}", end_date=pb_date(end)
                )
            ),
        )
        assert renewed.renewal_count == year and day_of(renewed.end_date) == end
        assert renewed.state == c.ArsContract.STATE_ACTIVE
        await skipping.sleep(timedelta(days=65))  # the rest of the year, renewal reminders included

    final = (await hub.stub(ALICE).GetArsContract(c.GetArsContractRequest(name=name))).ars_contract
    assert (final.renewal_count, final.amendment_count, final.state) == (4, 1, c.ArsContract.STATE_ACTIVE)
    assert day_of(final.end_date) == clock.add_months(start, 60) - DAY

    # The case continued as new along the way: the current run's history is bounded, and it carries on the
    # state (the timeline's numbering never restarted) and the search attributes.
    run_id, attributes = await described(hub, workflow_id)
    assert run_id != first_run
    history = await hub.client.get_workflow_handle(workflow_id).fetch_history()
    started = history.events[0]
    assert started.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    assert started.workflow_execution_started_event_attributes.continued_execution_run_id
    assert len(history.events) <= limit + 40
    positions = [
        e.sequence
        for e in (
            await hub.stub(ALICE).ListCaseEvents(c.ListCaseEventsRequest(parent=name, page_size=1000))
        ).events
    ]
    assert positions == list(range(1, len(positions) + 1))
    assert attributes["ParcoursState"] == "ACTIVE" and attributes["ParcoursKind"] == "ars-contract"
    expire = datetime.fromisoformat(str(attributes["ParcoursExpireTime"]))
    assert clock.local_date(expire, "Europe/Paris") == clock.add_months(start, 60)
    assert "ParcoursDueTime" not in attributes
