"""One trace per user action (issue 14.1), as an SRE reads them from the hub's OTLP export.

Each action a user takes — asking for a téléexpertise, accepting it, reporting; booking a teleconsultation,
starting it, completing it — is one trace rooted at the gRPC call their system made: down through the
Temporal Update and the workflow to the activities, the SQL they run and the billing calls they make. Nothing
of a later action lands in the trace of the case's creation. Spans and metrics are named and attributed as the
OpenTelemetry semantic conventions say, and none of them carries patient data.
"""

from __future__ import annotations

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.conftest import Minter
from tests.observability import flows
from tests.observability.conftest import Hub, attributes_of
from tests.observability.traces import CLIENT, SERVER, Trace, action_trace, holds, names

EXPERTISE = "parcours.expertise.v1.ExpertiseService"
SCHEDULING = "parcours.scheduling.v1.SchedulingService"
RECORD_ACT = "parcours.billing.v1.BillingService/RecordAct"
PERSIST = "RunActivity:persist_teleexpertise_case"


def text_of(span: Span) -> str:
    """Everything a span says: name, attributes, events, status, links."""
    return " ".join(
        [
            span.name,
            repr(attributes_of(span.attributes)),
            *(f"{e.name} {attributes_of(e.attributes)}" for e in span.events),
            span.status.message,
            *(repr(attributes_of(link.attributes)) for link in span.links),
        ]
    ).lower()


def assert_no_patient_data(spans: list[Span]) -> None:
    for span in spans:
        text = text_of(span)
        for value in flows.FORBIDDEN:
            assert value.lower() not in text, f"span {span.name} carries patient data ({value})"


def assert_one_tree(trace: Trace) -> None:
    """Every span of the trace hangs from its root, the RPC's server span."""
    roots = [s for s in trace.spans if not s.parent_span_id]
    assert [r.name for r in roots] == [trace.root.name]


def assert_sql(trace: Trace, below: str) -> None:
    """SQL ran under `below`, and its spans follow the database conventions."""
    queries = trace.sql_below(below)
    assert queries, f"no SQL under {below} in the trace of {trace.root.name}"
    for query in queries:
        attributes = attributes_of(query.attributes)
        assert query.kind == CLIENT
        assert attributes["db.system.name"] == "postgresql"
        assert attributes["db.namespace"]
        assert attributes["server.address"]
        assert query.name == attributes["db.query.summary"], "a query's span is named by its summary"
        assert "'" not in attributes["db.query.text"], "literals are redacted from the query text"


def assert_rpc(span: Span, method: str) -> None:
    attributes = attributes_of(span.attributes)
    assert span.name == method
    assert attributes["rpc.system.name"] == "grpc"
    assert attributes["rpc.method"] == method
    assert attributes["rpc.response.status_code"] == "OK"
    if span.kind == CLIENT:
        assert attributes["server.address"] == "127.0.0.1"
        assert isinstance(attributes["server.port"], int)


async def test_asking_accepting_and_reporting_a_teleexpertise_are_one_trace_each(
    hub: Hub, mint: Minter
) -> None:
    case = await flows.ask(hub, mint)
    await flows.answer(case)
    assert (await hub.temporal.get_workflow_handle(case.workflow_id).result())["state"] == "COMPLETED"

    created = await action_trace(
        hub.telemetry,
        f"{EXPERTISE}/CreateTeleexpertiseRequest",
        case.workflow_id,
        [
            "StartUpdateWithStartWorkflow:Teleexpertise",
            "RunWorkflow:Teleexpertise",
            "HandleUpdate:routed",
            PERSIST,
        ],
    )
    accepted = await action_trace(
        hub.telemetry,
        f"{EXPERTISE}/AcceptTeleexpertiseRequest",
        case.workflow_id,
        ["StartWorkflowUpdate:accept", "ValidateUpdate:accept", "HandleUpdate:accept", PERSIST],
    )
    reported = await action_trace(
        hub.telemetry,
        f"{EXPERTISE}/SubmitTeleexpertiseReport",
        case.workflow_id,
        [
            "StartWorkflowUpdate:submit_report",
            "HandleUpdate:submit_report",
            PERSIST,
            "RunActivity:record_teleexpertise_acts",
            RECORD_ACT,
        ],
    )

    def check() -> None:
        # Three traces, each from the edge down to the SQL its action caused.
        assert len({created.root.trace_id, accepted.root.trace_id, reported.root.trace_id}) == 3
        for trace in (created, accepted, reported):
            assert_one_tree(trace)
            assert_rpc(trace.root, trace.root.name)
            assert_sql(trace, PERSIST)
        # The creation's trace holds nothing of the later actions.
        assert not {n for n in names(created.spans) if "accept" in n or "report" in n or "record" in n}
        # An Update's handling is under the RPC that sent it, linked to the case's start.
        handled = accepted.one("HandleUpdate:accept")
        assert accepted.ancestors(handled)[0] == "StartWorkflowUpdate:accept"
        assert [link.trace_id for link in handled.links] == [created.root.trace_id]
        assert "HandleUpdate:accept" in accepted.ancestors(accepted.named(PERSIST)[0])
        # The report's billing: the workflow's activity calls billing, whose SQL is in the same trace.
        billing = reported.one("RunActivity:record_teleexpertise_acts")
        assert "HandleUpdate:submit_report" in reported.ancestors(billing)
        record_acts = reported.named(RECORD_ACT)
        assert {s.kind for s in record_acts} == {CLIENT, SERVER}
        for span in record_acts:
            assert_rpc(span, RECORD_ACT)
        assert reported.sql_below(RECORD_ACT), "billing's SQL is in the report's trace"
        # What billing's answer led to (the case's billing state persisted) too.
        assert len(reported.named(PERSIST)) == 2

    await holds(hub.telemetry, check)

    assert_no_patient_data(hub.telemetry.spans)


async def test_booking_starting_and_completing_a_teleconsultation_are_one_trace_each(
    hub: Hub, mint: Minter
) -> None:
    case = await flows.book(hub, mint)
    await flows.hold(hub, case)
    assert (await hub.temporal.get_workflow_handle(case.appointment.workflow_id).result())["state"] in (
        "BILLED",
        "BILLING_REFUSED",
    )

    booked = await action_trace(
        hub.telemetry,
        f"{SCHEDULING}/BookAppointment",
        case.appointment.workflow_id,
        ["StartWorkflow:Teleconsultation", "RunWorkflow:Teleconsultation", "RunActivity:send_join_link"],
    )
    started = await action_trace(
        hub.telemetry,
        f"{SCHEDULING}/StartTeleconsultation",
        case.appointment.workflow_id,
        ["StartWorkflowUpdate:start", "HandleUpdate:start", "RunActivity:mark_arrived"],
    )
    completed = await action_trace(
        hub.telemetry,
        f"{SCHEDULING}/CompleteTeleconsultation",
        case.appointment.workflow_id,
        [
            "HandleUpdate:complete",
            "RunActivity:record_completion",
            "RunActivity:record_billable_act",
            RECORD_ACT,
            "RunActivity:record_outcome_and_report",
        ],
    )

    def check() -> None:
        assert len({booked.root.trace_id, started.root.trace_id, completed.root.trace_id}) == 3
        for trace, activity in (
            (booked, "RunActivity:send_join_link"),
            (started, "RunActivity:mark_arrived"),
            (completed, "RunActivity:record_completion"),
        ):
            assert_one_tree(trace)
            assert_rpc(trace.root, trace.root.name)
            assert_sql(trace, activity)
        # The outbox relay starts the workflow inside the booking's trace.
        assert booked.ancestors(booked.one("StartWorkflow:Teleconsultation"))[-1] == booked.root.name
        assert not {n for n in names(booked.spans) if "start" in n.lower() and "Update" in n}
        assert "RunActivity:record_outcome_and_report" not in names(started.spans)
        # Billing, and what follows it, belong to the completion.
        for activity in ("RunActivity:record_billable_act", "RunActivity:record_outcome_and_report"):
            assert "HandleUpdate:complete" in completed.ancestors(completed.one(activity))
        assert completed.sql_below(RECORD_ACT)

    await holds(hub.telemetry, check)

    assert_no_patient_data(hub.telemetry.spans)


async def test_metrics_follow_the_conventions_without_patient_data(hub: Hub, mint: Minter) -> None:
    await flows.ask(hub, mint)
    wanted = {
        "rpc.server.call.duration": "s",
        "rpc.client.call.duration": "s",
        "db.client.operation.duration": "s",
    }
    telemetry = hub.telemetry

    def arrived() -> bool:
        return wanted.keys() <= {m.name for m in telemetry.metrics}

    await telemetry.until(arrived)
    for metric in telemetry.metrics:
        if metric.name in wanted:
            assert metric.unit == wanted[metric.name], metric.name
    server_points = [
        attributes_of(point.attributes)
        for metric in telemetry.metrics
        if metric.name == "rpc.server.call.duration"
        for point in metric.histogram.data_points
    ]
    assert {
        "rpc.system.name": "grpc",
        "rpc.method": f"{EXPERTISE}/CreateTeleexpertiseRequest",
        "rpc.response.status_code": "OK",
    } in server_points
    labels = repr([attributes_of(p.attributes) for m in telemetry.metrics for p in m.histogram.data_points])
    for value in flows.FORBIDDEN:
        assert value.lower() not in labels.lower()
