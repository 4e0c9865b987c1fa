"""The billing activity report over what the hub's workflows recorded in January and February 2023 (no other
test bills then): lines and amounts per region, GHT, month of the act and code, reversals deducted in the
month of their act; an ARS officer sees their region, an establishment its GHT (itself outside any GHT), the
hub everything; pages follow one another in order."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime

import grpc
import pytest
from google.type import date_pb2
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc

from services.kit.pki import DevPki
from tests.billing.builders import DERM, GP, GP_REUNION, cents, gp, paris, teleconsultation, teleexpertise
from tests.billing.conftest import establishment_stub
from tests.conftest import Minter
from tests.support import DAUPHINE, LOIRE, REUNION, STRANGER, bearer, component_channel, request_id
from tests.support.calls import call, details

Stub = billing_pb2_grpc.BillingServiceStub
GP_BELLEDONNE = "10000000801"  # GP, practises at 380000024 (GHT Alpes-Dauphiné)
# (month, region, GHT, code) → (charges, reversals, cents)
Rows = dict[tuple[str, str, str, str], tuple[int, int, int]]


def months(**filters: object) -> billing_pb2.GetBillingActivityReportRequest:
    values: dict[str, object] = {
        "start_month": date_pb2.Date(year=2023, month=1),
        "end_month": date_pb2.Date(year=2023, month=2),
        **filters,
    }
    return billing_pb2.GetBillingActivityReportRequest(**values)  # type: ignore[arg-type]


def rows(response: billing_pb2.GetBillingActivityReportResponse) -> Rows:
    found: Rows = {}
    for r in response.rows:
        assert r.count == r.charges - r.reversals
        assert r.amount.currency_code == "EUR"
        key = (f"{r.month.year}-{r.month.month:02d}", r.region, r.ght, r.code)
        assert key not in found
        found[key] = (r.charges, r.reversals, cents(r.amount))
    return found


@pytest.fixture(scope="module")
async def recorded(hub: Stub) -> Rows:
    """What the workflows billed, as the report must add it up, from the lines they were answered."""

    async def record(act: billing_pb2.Act) -> list[billing_pb2.Charge]:
        reply = await hub.RecordAct(
            billing_pb2.RecordActRequest(
                request_id=request_id(),
                act_id=f"act-{uuid.uuid4()}",
                patient=f"patients/{uuid.uuid4()}",
                act=act,
            )
        )
        return list(reply.charges)

    expected: dict[tuple[str, str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])

    def add(month: str, region: str, ght: str, charges: list[billing_pb2.Charge]) -> None:
        for charge in charges:
            counts = expected[(month, region, ght, charge.code)]
            counts[0] += 1
            counts[2] += cents(charge.amount)

    loire, dauphine = "ghts/ght-loire", "ghts/ght-alpes-dauphine"
    # GHT Loire: a téléexpertise (TE2 for the dermatologist, RQD for the requester) and a teleconsultation
    # at 23:30 on 31 January in Paris (22:30 UTC): a January act.
    add("2023-01", "regions/84", loire, await record(teleexpertise(paris("2023-01-10 10:00"))))
    late = await record(teleconsultation(paris("2023-01-31 23:30")))
    add("2023-01", "regions/84", loire, late)
    # The teleconsultation is reversed later: its line no longer stands, in January.
    await hub.ReverseCharge(
        billing_pb2.ReverseChargeRequest(
            request_id=request_id(), name=late[0].name, reason=billing_pb2.REVERSAL_REASON_ACT_NOT_PERFORMED
        )
    )
    reversed_key = ("2023-01", "regions/84", loire, late[0].code)
    expected[reversed_key][1] += 1
    expected[reversed_key][2] -= cents(late[0].amount)
    # GHT Alpes-Dauphiné, February.
    add(
        "2023-02",
        "regions/84",
        dauphine,
        await record(teleconsultation(paris("2023-02-15 10:00"), gp(GP_BELLEDONNE), establishment=DAUPHINE)),
    )
    # La Réunion, outside any GHT: 21:00 UTC on 31 January is 01:00 on 1 February there.
    add(
        "2023-02",
        "regions/04",
        "",
        await record(
            teleconsultation(
                datetime(2023, 1, 31, 21, 0, tzinfo=UTC), gp(GP_REUNION), region="04", establishment=REUNION
            )
        ),
    )
    # An establishment the directory does not know counts in the region its act names, outside any GHT.
    add(
        "2023-02",
        "regions/94",
        "",
        await record(teleconsultation(paris("2023-02-20 10:00"), region="94", establishment=STRANGER)),
    )
    return {key: (c, r, a) for key, (c, r, a) in expected.items()}


def _only(found: Rows, region: str = "", ght: str = "") -> Rows:
    return {k: v for k, v in found.items() if (not region or k[1] == region) and (not ght or k[2] == ght)}


async def test_the_hub_sees_every_region_with_reversals_deducted_in_the_month_of_their_act(
    hub: Stub, recorded: Rows
) -> None:
    everything = rows(await hub.GetBillingActivityReport(months()))
    assert everything == recorded
    # The reversed teleconsultation: billed once, reversed once, nothing left of it.
    january = {k: v for k, v in everything.items() if k[0] == "2023-01" and v[1]}
    assert list(january.values()) == [(1, 1, 0)]
    assert {k[3] for k in everything if k[0] == "2023-01"} >= {"TE2", "RQD"}
    # Rows come by month, region, GHT and code.
    assert list(everything) == sorted(everything)

    teleexpertises = rows(
        await hub.GetBillingActivityReport(months(act_type=billing_pb2.ACT_TYPE_TELEEXPERTISE))
    )
    assert {k[3] for k in teleexpertises} == {"TE2", "RQD"}
    only_february = rows(
        await hub.GetBillingActivityReport(
            months(start_month=date_pb2.Date(year=2023, month=2), region="regions/04")
        )
    )
    assert only_february == _only(recorded, region="regions/04")


async def test_an_ars_officer_sees_their_region_through_the_console_and_no_other(
    pki: DevPki, billing_address: str, mint: Minter, recorded: Rows
) -> None:
    console = Stub(component_channel(pki, billing_address, "console"))
    officer = bearer(mint(staff="agent84-billing", roles=["ars_officer"], region="84"))
    theirs = rows(await console.GetBillingActivityReport(months(), metadata=officer))
    assert theirs == _only(recorded, region="regions/84")
    assert {k[2] for k in theirs} == {"ghts/ght-loire", "ghts/ght-alpes-dauphine"}
    for other in ("regions/04", "regions/94"):
        refused = await call(console.GetBillingActivityReport(months(region=other), metadata=officer))
        assert (refused.code(), details(refused)[0].reason) == (  # type: ignore[union-attr]
            grpc.StatusCode.PERMISSION_DENIED,
            "REPORT_SCOPE_NOT_VISIBLE",
        )


async def test_an_establishment_sees_its_ght_or_itself_outside_any(
    pki: DevPki, billing_address: str, mint: Minter, recorded: Rows
) -> None:
    loire = establishment_stub(pki, billing_address, LOIRE)
    staff = bearer(mint(staff="direction-forez-billing"))
    assert rows(await loire.GetBillingActivityReport(months(), metadata=staff)) == _only(
        recorded, ght="ghts/ght-loire"
    )
    refused = await call(
        loire.GetBillingActivityReport(months(ght="ghts/ght-alpes-dauphine"), metadata=staff)
    )
    assert details(refused)[0].reason == "REPORT_SCOPE_NOT_VISIBLE"  # type: ignore[union-attr]
    # A practitioner of the GHT, through their establishment: the GHT's, as its staff.
    doctor = bearer(mint(rpps=GP))
    assert rows(await loire.GetBillingActivityReport(months(), metadata=doctor)) == _only(
        recorded, ght="ghts/ght-loire"
    )
    reunion = establishment_stub(pki, billing_address, REUNION)
    alone = rows(await reunion.GetBillingActivityReport(months(), metadata=bearer(mint(staff="dir-974"))))
    assert alone == _only(recorded, region="regions/04")
    # The dermatologist's own Loire lines show, but no practitioner does: rows carry no one.
    assert DERM not in str(await loire.GetBillingActivityReport(months(), metadata=staff))


async def test_pages_follow_in_order_and_bad_requests_name_their_field(hub: Stub, recorded: Rows) -> None:
    everything = await hub.GetBillingActivityReport(months())
    walked: list[billing_pb2.BillingActivity] = []
    token = ""
    while True:
        page = await hub.GetBillingActivityReport(months(page_size=2, page_token=token))
        assert len(page.rows) <= 2
        walked += page.rows
        token = page.next_page_token
        if not token:
            break
    assert walked == list(everything.rows)
    assert len(walked) == len(recorded) > 2

    # A token is bound to the filters it was issued with.
    first = await hub.GetBillingActivityReport(months(page_size=1))
    moved = await call(
        hub.GetBillingActivityReport(
            months(page_size=1, page_token=first.next_page_token, region="regions/84")
        )
    )
    assert moved.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in details(moved)[1]] == ["page_token"]
    backwards = await call(
        hub.GetBillingActivityReport(
            billing_pb2.GetBillingActivityReportRequest(
                start_month=date_pb2.Date(year=2023, month=3), end_month=date_pb2.Date(year=2023, month=1)
            )
        )
    )
    assert backwards.code() == grpc.StatusCode.INVALID_ARGUMENT
    not_a_month = await call(
        hub.GetBillingActivityReport(
            billing_pb2.GetBillingActivityReportRequest(
                start_month=date_pb2.Date(year=2023, month=1, day=5),
                end_month=date_pb2.Date(year=2023, month=2),
            )
        )
    )
    assert [f for f, _ in details(not_a_month)[1]] == ["start_month"]
