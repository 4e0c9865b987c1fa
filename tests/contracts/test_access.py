"""Who sees and decides what: an ARS officer their region's cases only, an Ordre reviewer the cases routed to
its territory, a promoter its own, billing coverage only. A hidden case answers exactly like a missing one (to
the byte), lists and tab counters leave it out, and every read of a case is audited."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
from grpc_status import rpc_status
from parcours.contracts.v1 import contracts_pb2 as c

from tests.contracts.conftest import (
    ALICE,
    BILLING,
    DOCTOR,
    OPERATOR,
    ORDRE,
    ORDRE_13,
    PACA_OFFICER,
    PROMOTER,
    Hub,
    Who,
    activity,
    new_contract,
    rid,
)
from tests.support import DAUPHINE
from tests.support.calls import call, details

TODAY = datetime.now(UTC).date()
OTHER_PROMOTER = Who("establishments/" + DAUPHINE, DAUPHINE, staff="promoter-dauphine", roles=("promoter",))


def status_bytes(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, bytes]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    return error.code(), status.SerializeToString(deterministic=True)


async def submitted(hub: Hub, region: str, departement: str, **fields: object) -> c.ArsContract:
    created = (
        await hub.stub(PROMOTER).CreateArsContract(
            new_contract(
                region=region,
                departement=departement,
                start=TODAY + timedelta(days=10),
                end=TODAY + timedelta(days=400),
                **fields,  # type: ignore[arg-type]
            )
        )
    ).ars_contract
    return (
        await hub.stub(PROMOTER).SubmitArsContract(
            c.SubmitArsContractRequest(request_id=rid(), name=created.name)
        )
    ).ars_contract


async def test_an_officer_of_region_84_neither_sees_nor_acts_on_region_93_s_case(
    hub: Hub, paca_follows_cnom: c.RegionPolicy
) -> None:
    theirs = await submitted(hub, "93", "13")
    missing = f"arsContracts/{uuid.uuid4()}"
    alice = hub.stub(ALICE)
    counts_before = (await alice.CountCases(c.CountCasesRequest(include_closed=True))).counts
    seen_before = {x.name for x in (await alice.ListCases(c.ListCasesRequest(page_size=500))).cases}

    # Reads and changes of the hidden case answer exactly as those of a case that does not exist.
    for request_of in (
        lambda name: alice.GetArsContract(c.GetArsContractRequest(name=name)),
        lambda name: alice.MarkArsContractComplete(
            c.MarkArsContractCompleteRequest(request_id=rid(), name=name)
        ),
        lambda name: alice.ClaimCaseStep(c.ClaimCaseStepRequest(request_id=rid(), name=name)),
        lambda name: alice.ListCaseEvents(c.ListCaseEventsRequest(parent=name)),
        lambda name: alice.PostCaseMessage(
            c.PostCaseMessageRequest(request_id=rid(), parent=name, text="Bonjour")
        ),
    ):
        hidden = await call(request_of(theirs.name))
        absent = await call(request_of(missing))
        assert status_bytes(hidden) == status_bytes(absent)
        assert hidden.code() == grpc.StatusCode.PERMISSION_DENIED
        assert details(hidden)[0].reason == "CASE_NOT_VISIBLE"  # type: ignore[union-attr]

    # Lists and counters are those of a hub where that case does not exist.
    assert theirs.name not in {
        x.name for x in (await alice.ListCases(c.ListCasesRequest(page_size=500))).cases
    }
    assert {x.name for x in (await alice.ListCases(c.ListCasesRequest(page_size=500))).cases} == seen_before
    assert (await alice.CountCases(c.CountCasesRequest(include_closed=True))).counts == counts_before
    listed = (await alice.ListArsContracts(c.ListArsContractsRequest(page_size=500))).ars_contracts
    assert theirs.name not in {x.name for x in listed}

    # Region 93's own officer sees it, in the inbox's "to process" tab.
    paca = hub.stub(PACA_OFFICER)
    assert (
        await paca.GetArsContract(c.GetArsContractRequest(name=theirs.name))
    ).ars_contract.name == theirs.name
    to_process = (await paca.ListCases(c.ListCasesRequest(tab=c.TAB_TO_PROCESS, page_size=500))).cases
    assert theirs.name in {x.name for x in to_process}


async def test_an_ordre_reviewer_sees_only_its_territory_and_cannot_take_an_ars_step(
    hub: Hub, paca_follows_cnom: c.RegionPolicy
) -> None:
    # Region 93 asks the Ordre's visa for an out-of-parcours activity: routed to the Ordre of its département.
    theirs = await submitted(hub, "93", "13")
    ordre_13, ordre_42 = hub.stub(ORDRE_13), hub.stub(ORDRE)
    assert (
        await ordre_13.GetArsContract(c.GetArsContractRequest(name=theirs.name))
    ).ars_contract.visa_required
    hidden = await call(ordre_42.GetArsContract(c.GetArsContractRequest(name=theirs.name)))
    assert details(hidden)[0].reason == "CASE_NOT_VISIBLE"  # type: ignore[union-attr]

    # An ARS decision is not the Ordre's to take: the method refuses its role, the step its group.
    approve = await call(
        ordre_13.ApproveArsContract(c.ApproveArsContractRequest(request_id=rid(), name=theirs.name))
    )
    assert approve.code() == grpc.StatusCode.PERMISSION_DENIED
    assert details(approve)[0].reason == "ROLE_REQUIRED"  # type: ignore[union-attr]
    claim = await call(ordre_13.ClaimCaseStep(c.ClaimCaseStepRequest(request_id=rid(), name=theirs.name)))
    assert claim.code() == grpc.StatusCode.PERMISSION_DENIED
    assert details(claim)[0].reason == "NOT_A_CANDIDATE"  # type: ignore[union-attr]


async def test_a_promoter_sees_its_own_cases_and_billing_only_coverage(hub: Hub, pool: asyncpg.Pool) -> None:
    mine = await submitted(hub, "84", "42")
    other = hub.stub(OTHER_PROMOTER)
    hidden = await call(other.GetArsContract(c.GetArsContractRequest(name=mine.name)))
    assert details(hidden)[0].reason == "CASE_NOT_VISIBLE"  # type: ignore[union-attr]
    withdrawal = await call(
        other.WithdrawArsContract(c.WithdrawArsContractRequest(request_id=rid(), name=mine.name))
    )
    assert details(withdrawal)[0].reason == "CASE_NOT_VISIBLE"  # type: ignore[union-attr]
    assert mine.name not in {
        x.name for x in (await other.ListArsContracts(c.ListArsContractsRequest())).ars_contracts
    }
    assert mine.name in {
        x.name for x in (await hub.stub(PROMOTER).ListArsContracts(c.ListArsContractsRequest())).ars_contracts
    }
    # A practitioner of the same establishment is not its promoter (no PROMOTER role): hidden too.
    doctor = await call(hub.stub(DOCTOR).GetArsContract(c.GetArsContractRequest(name=mine.name)))
    assert details(doctor)[0].reason == "CASE_NOT_VISIBLE"  # type: ignore[union-attr]
    # The hub operator sees every case.
    assert (
        await hub.stub(OPERATOR).GetArsContract(c.GetArsContractRequest(name=mine.name))
    ).ars_contract.name

    # Billing reads coverage with its component identity, and nothing of the cases.
    billing = hub.stub(BILLING)
    coverage = await billing.CheckCoverage(
        c.CheckCoverageRequest(activity=activity(), act_date=mine.requested_start_date, region="regions/84")
    )
    assert coverage.coverage.covered and coverage.coverage_version >= 1
    refused = await call(billing.GetArsContract(c.GetArsContractRequest(name=mine.name)))
    assert details(refused)[0].reason == "ROLE_REQUIRED"  # type: ignore[union-attr]


async def test_every_read_of_a_case_is_audited_and_reference_reads_are_not(
    hub: Hub, pool: asyncpg.Pool
) -> None:
    mine = await submitted(hub, "84", "42")
    alice = hub.stub(ALICE)
    await alice.GetArsContract(c.GetArsContractRequest(name=mine.name))
    await alice.ListCaseEvents(c.ListCaseEventsRequest(parent=mine.name))
    refused = await call(hub.stub(OTHER_PROMOTER).GetArsContract(c.GetArsContractRequest(name=mine.name)))
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    rows = await pool.fetch(
        "SELECT method, practitioner, outcome FROM audit.events WHERE resource = $1 ORDER BY seq",
        mine.name,
    )
    seen = {(r["method"].rsplit("/", 1)[1], r["practitioner"], r["outcome"]) for r in rows}
    assert ("GetArsContract", "staff:alice", "OK") in seen
    assert ("ListCaseEvents", "staff:alice", "OK") in seen
    assert ("GetArsContract", "staff:promoter-dauphine", "PERMISSION_DENIED") in seen
    assert ("SubmitArsContract", "staff:promoter-loire", "OK") in seen
    # The agrément register is reference data: not audited.
    before = await pool.fetchval(
        "SELECT count(*) FROM audit.events WHERE method LIKE '%/ListTeleconsultationCompanies'"
    )
    await alice.ListTeleconsultationCompanies(c.ListTeleconsultationCompaniesRequest())
    after = await pool.fetchval(
        "SELECT count(*) FROM audit.events WHERE method LIKE '%/ListTeleconsultationCompanies'"
    )
    assert after == before
