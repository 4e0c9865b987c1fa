"""RecordAct and ReverseCharge over real gRPC: idempotency on the act id (also under concurrent retries),
quotas that hold when acts are recorded at the same moment, reversals, and a ledger the database itself
refuses to change."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc
import pytest
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc

from tests.billing.builders import cents, new_patient, paris, teleconsultation, teleexpertise
from tests.support import request_id
from tests.support.calls import call, details


def record(act: billing_pb2.Act, patient: str, act_id: str | None = None) -> billing_pb2.RecordActRequest:
    return billing_pb2.RecordActRequest(
        request_id=request_id(), act_id=act_id or f"act-{uuid.uuid4()}", patient=patient, act=act
    )


async def test_recording_the_same_act_again_returns_the_same_lines(
    hub: billing_pb2_grpc.BillingServiceStub,
) -> None:
    patient = new_patient()
    request = record(teleexpertise(paris("2025-04-02 11:00")), patient)
    first = await hub.RecordAct(request)
    assert [(c.code, cents(c.amount), c.line) for c in first.charges] == [("TE2", 2000, 1), ("RQD", 1000, 2)]
    assert all(c.name.startswith("charges/") and c.patient == patient for c in first.charges)
    assert [c.quota_slot for c in first.charges] == [1, 1]

    # A retry (same request) and a second request for the same act id: the lines of the first recording.
    again = await hub.RecordAct(request)
    retried = billing_pb2.RecordActRequest()
    retried.CopyFrom(request)
    retried.request_id = request_id()
    other_request = await hub.RecordAct(retried)
    for reply in (again, other_request):
        assert [c.name for c in reply.charges] == [c.name for c in first.charges]
        assert reply.quote == first.quote
    # The act was counted once in the quota.
    quote = await hub.QuoteAct(billing_pb2.QuoteActRequest(act=request.act, patient=patient))
    assert [line.quota_slot for line in quote.quote.lines] == [2, 2]


async def test_a_retry_returns_the_lines_even_when_they_took_the_last_slot(
    hub: billing_pb2_grpc.BillingServiceStub,
) -> None:
    patient = new_patient()
    for month in (1, 2, 3):
        await hub.RecordAct(record(teleexpertise(paris(f"2025-0{month}-10 10:00")), patient))
    fourth = record(teleexpertise(paris("2025-04-10 10:00")), patient)
    first = await hub.RecordAct(fourth)
    assert [c.quota_slot for c in first.charges] == [4, 4]
    again = await hub.RecordAct(fourth)
    assert [c.name for c in again.charges] == [c.name for c in first.charges]


async def test_concurrent_duplicates_record_one_set_of_lines(
    hub: billing_pb2_grpc.BillingServiceStub, pool: asyncpg.Pool
) -> None:
    patient = new_patient()
    act_id = f"act-{uuid.uuid4()}"
    act = teleexpertise(paris("2025-04-03 11:00"))
    replies = await asyncio.gather(*(hub.RecordAct(record(act, patient, act_id)) for _ in range(6)))
    names = {tuple(c.name for c in reply.charges) for reply in replies}
    assert len(names) == 1 and len(next(iter(names))) == 2
    assert await pool.fetchval("SELECT count(*) FROM billing.charges WHERE act_id = $1", act_id) == 2
    used = await pool.fetchval(
        "SELECT max(used) FROM billing.quota_counters WHERE counter_key LIKE '%' || $1 || '%'", patient
    )
    assert used == 1


async def test_an_act_id_names_one_act(hub: billing_pb2_grpc.BillingServiceStub) -> None:
    act_id = f"act-{uuid.uuid4()}"
    await hub.RecordAct(record(teleconsultation(paris("2025-04-04 09:00")), new_patient(), act_id))
    error = await call(
        hub.RecordAct(record(teleconsultation(paris("2025-04-04 09:00")), new_patient(), act_id))
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    info, _ = details(error)
    assert info is not None and info.reason == "ACT_ID_REUSED"


async def test_a_request_id_names_one_request(hub: billing_pb2_grpc.BillingServiceStub) -> None:
    first = record(teleconsultation(paris("2025-04-04 09:30")), new_patient())
    await hub.RecordAct(first)
    reused = record(teleconsultation(paris("2025-04-04 09:30")), new_patient())
    reused.request_id = first.request_id
    error = await call(hub.RecordAct(reused))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(error)[0].reason == "REQUEST_ID_REUSED"  # type: ignore[union-attr]


async def test_concurrent_acts_cannot_both_take_the_last_yearly_slot(
    hub: billing_pb2_grpc.BillingServiceStub,
) -> None:
    patient = new_patient()
    for month in (1, 2, 3):
        await hub.RecordAct(record(teleexpertise(paris(f"2025-0{month}-10 10:00")), patient))
    contenders = [record(teleexpertise(paris(f"2025-06-{day:02d} 10:00")), patient) for day in range(1, 9)]
    results = await asyncio.gather(*(hub.RecordAct(r) for r in contenders), return_exceptions=True)
    recorded = [r for r in results if isinstance(r, billing_pb2.RecordActResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(recorded) == 1 and len(refused) == len(contenders) - 1
    assert [c.quota_slot for c in recorded[0].charges] == [4, 4]
    for error in refused:
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert details(error)[0].reason == "TELEEXPERTISE_QUOTA_EXCEEDED"  # type: ignore[union-attr]


async def test_the_expert_side_is_refused_alone_when_only_its_quota_is_full(
    hub: billing_pb2_grpc.BillingServiceStub,
) -> None:
    from tests.billing.builders import NURSE, pro
    from tests.billing.builders import p as practice

    patient = new_patient()
    for month in (1, 2, 3, 4):
        await hub.RecordAct(record(teleexpertise(paris(f"2025-0{month}-10 10:00")), patient))
    # Another requester for the same patient and expert: only the expert's count is full.
    nurse = pro(NURSE, practice.PROFESSION_NURSE)
    reply = await hub.RecordAct(record(teleexpertise(paris("2025-07-01 10:00"), requester=nurse), patient))
    assert [c.code for c in reply.charges] == ["RQD"]
    assert [r.reason for r in reply.quote.refusals] == ["TELEEXPERTISE_QUOTA_EXCEEDED"]
    assert reply.quote.refusals[0].code == "TE2"


async def test_an_act_with_nothing_billable_is_refused_and_not_recorded(
    hub: billing_pb2_grpc.BillingServiceStub, pool: asyncpg.Pool
) -> None:
    from tests.billing.builders import act, gp

    act_id = f"act-{uuid.uuid4()}"
    teleconseil = act(billing_pb2.ACT_TYPE_TELECONSEIL, paris("2025-04-05 10:00"), gp())
    error = await call(hub.RecordAct(record(teleconseil, new_patient(), act_id)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = details(error)
    assert info is not None and info.reason == "NOT_A_BILLABLE_ACT"
    assert info.metadata["refusals"] == "NOT_A_BILLABLE_ACT"
    assert await pool.fetchval("SELECT count(*) FROM billing.acts WHERE act_id = $1", act_id) == 0


async def test_an_act_in_the_future_is_not_recorded(hub: billing_pb2_grpc.BillingServiceStub) -> None:
    from datetime import UTC, datetime, timedelta

    error = await call(
        hub.RecordAct(record(teleconsultation(datetime.now(UTC) + timedelta(days=2)), new_patient()))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in details(error)[1]] == ["act.act_time"]


async def test_a_reversal_adds_a_line_and_frees_the_quota_slot(
    hub: billing_pb2_grpc.BillingServiceStub,
) -> None:
    patient = new_patient()
    first = await hub.RecordAct(record(teleexpertise(paris("2025-05-05 10:00")), patient))
    te2 = next(c for c in first.charges if c.code == "TE2")
    reverse = billing_pb2.ReverseChargeRequest(
        request_id=request_id(),
        name=te2.name,
        reason=billing_pb2.REVERSAL_REASON_ENTERED_IN_ERROR,
        note="wrong expert selected",
    )
    reply = await hub.ReverseCharge(reverse)
    assert reply.reversal.kind == billing_pb2.Charge.KIND_REVERSAL
    assert reply.reversal.reverses == te2.name and reply.charge.reversed_by == reply.reversal.name
    assert cents(reply.reversal.amount) == -2000 and cents(reply.reversal.reimbursement) == -2000
    assert reply.reversal.line == te2.line and reply.reversal.act_id == te2.act_id
    assert reply.charge.reversal_reason == billing_pb2.REVERSAL_REASON_ENTERED_IN_ERROR
    # Idempotent on request_id; a second reversal of the same charge is refused.
    assert (await hub.ReverseCharge(reverse)).reversal.name == reply.reversal.name
    again = billing_pb2.ReverseChargeRequest()
    again.CopyFrom(reverse)
    again.request_id = request_id()
    error = await call(hub.ReverseCharge(again))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(error)[0].reason == "CHARGE_ALREADY_REVERSED"  # type: ignore[union-attr]
    # A reversal line cannot itself be reversed.
    error = await call(
        hub.ReverseCharge(
            billing_pb2.ReverseChargeRequest(
                request_id=request_id(),
                name=reply.reversal.name,
                reason=billing_pb2.REVERSAL_REASON_ENTERED_IN_ERROR,
            )
        )
    )
    assert details(error)[0].reason == "NOT_REVERSIBLE"  # type: ignore[union-attr]
    # The expert's slot is free again; the requester's is still taken.
    quote = await hub.QuoteAct(
        billing_pb2.QuoteActRequest(act=teleexpertise(paris("2025-06-05 10:00")), patient=patient)
    )
    assert {line.code: line.quota_slot for line in quote.quote.lines} == {"TE2": 1, "RQD": 2}
    # Replaying the recording shows the charge as reversed, never rewritten.
    replay = await hub.RecordAct(
        billing_pb2.RecordActRequest(
            request_id=request_id(),
            act_id=te2.act_id,
            patient=patient,
            act=teleexpertise(paris("2025-05-05 10:00")),
        )
    )
    assert next(c for c in replay.charges if c.code == "TE2").reversed_by == reply.reversal.name


async def test_reversing_an_unknown_charge(hub: billing_pb2_grpc.BillingServiceStub) -> None:
    error = await call(
        hub.ReverseCharge(
            billing_pb2.ReverseChargeRequest(
                request_id=request_id(),
                name=f"charges/{uuid.uuid4()}",
                reason=billing_pb2.REVERSAL_REASON_ACT_NOT_PERFORMED,
            )
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE billing.charges SET amount_cents = 1 WHERE charge_id = $1",
        "DELETE FROM billing.charges WHERE charge_id = $1",
    ],
)
async def test_the_ledger_refuses_updates_and_deletes(
    hub: billing_pb2_grpc.BillingServiceStub, pool: asyncpg.Pool, statement: str
) -> None:
    reply = await hub.RecordAct(record(teleconsultation(paris("2025-05-06 10:00")), new_patient()))
    charge_id = uuid.UUID(reply.charges[0].name.removeprefix("charges/"))
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pool.execute(statement, charge_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pool.execute("DELETE FROM billing.acts WHERE act_id = $1", reply.charges[0].act_id)
