"""The dated catalog: the data file, its loader, and GetCatalog / ListCatalogEntries as of a date."""

from __future__ import annotations

from pathlib import Path

import grpc
import psycopg
import pytest
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc

from services.billing.catalog import DATA_FILE, CatalogError, load, parse, read_data_file
from tests.billing.builders import cents
from tests.support.calls import call, details

CATALOG = "catalogs/ngap-telemedicine"
REQUIRED_CODES = {"TCG", "TC", "TE2", "RQD", "TLS", "TLL", "TLD", "TLM", "TMI"}


def as_of(year: int, month: int, day: int) -> dict[str, object]:
    return {"year": year, "month": month, "day": day}


def test_the_data_file_holds_every_required_code_and_forfait() -> None:
    catalog = read_data_file()
    assert catalog.codes >= REQUIRED_CODES
    forfaits = sorted(e.amount_cents for e in catalog.entries if e.act_type == "ACT_TYPE_TELESURVEILLANCE")
    assert forfaits == [1100, 2800, 5000, 7333, 8250, 9167]
    te2 = sorted(
        (e.effective_from.isoformat(), e.amount_cents, e.overseas_amount_cents)
        for e in catalog.entries
        if e.code == "TE2"
    )
    assert te2 == [("2022-04-01", 2000, 2400), ("2026-01-01", 2300, 2760)]
    # Every unconfirmed value says so in the data, with a source for every entry and parameter.
    assert all(e.source for e in catalog.entries) and all(p.source for p in catalog.parameters)
    assert {"TC", "TMI", "TSO1"} <= {e.code for e in catalog.entries if not e.confirmed}
    assert not next(p for p in catalog.parameters if p.name == "quota.teleexpertise.key").confirmed


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("effective_to = 2025-12-31", "effective_to = 2026-01-01"), "two versions in force on the same day"),
        (('amount = "23.00"', 'amount = "23.001"'), "whole cents"),
        (('profession = "MIDWIFE"', 'profession = "WIZARD"'), "not a PROFESSION value"),
        (('text = "biller_patient_year"', 'text = "per_moon"'), "is not one of"),
    ],
)
def test_a_malformed_data_file_is_refused_with_its_problem(change: tuple[str, str], problem: str) -> None:
    text = DATA_FILE.read_text(encoding="utf-8")
    assert change[0] in text
    with pytest.raises(CatalogError, match=problem):
        parse(text.replace(change[0], change[1], 1))


def test_loading_is_idempotent_and_a_changed_file_needs_a_new_version(
    database_url: str, tmp_path: Path
) -> None:
    catalog = read_data_file()
    with psycopg.connect(database_url) as conn, conn.cursor() as cursor:
        # Already loaded by the migration: a no-op.
        assert load(cursor, catalog) is False
        changed = parse(DATA_FILE.read_text(encoding="utf-8").replace('amount = "25.00"', 'amount = "26.00"'))
        with pytest.raises(CatalogError, match="bump `version`"):
            load(cursor, changed)
        conn.rollback()
        cursor.execute("SELECT current_version FROM billing.catalogs WHERE catalog = 'ngap-telemedicine'")
        assert cursor.fetchone() == (catalog.version,)


async def test_the_catalog_as_of_a_date(hub: billing_pb2_grpc.BillingServiceStub) -> None:
    before = (
        await hub.GetCatalog(billing_pb2.GetCatalogRequest(name=CATALOG, as_of=as_of(2025, 12, 31)))
    ).catalog
    after = (
        await hub.GetCatalog(billing_pb2.GetCatalogRequest(name=CATALOG, as_of=as_of(2026, 1, 1)))
    ).catalog
    assert before.version == after.version == read_data_file().version
    te2_before = next(e for e in before.entries if e.code == "TE2")
    te2_after = next(e for e in after.entries if e.code == "TE2")
    assert (cents(te2_before.amount), cents(te2_before.overseas_amount)) == (2000, 2400)
    assert (cents(te2_after.amount), cents(te2_after.overseas_amount)) == (2300, 2760)
    assert not te2_after.cumulable and not te2_after.extra_fee_allowed and te2_after.quota == "teleexpertise"
    assert {b.profession for b in te2_after.billers} >= {1, 2}  # physicians and midwives
    rate = next(p for p in after.parameters if p.name == "reimbursement_rate.consultation")
    assert rate.basis_points == 7000 and rate.confirmed
    participation = next(p for p in after.parameters if p.name == "participation_forfaitaire.amount")
    assert cents(participation.money) == 200
    covid = (
        await hub.GetCatalog(billing_pb2.GetCatalogRequest(name=CATALOG, as_of=as_of(2021, 2, 1)))
    ).catalog
    assert (
        next(p for p in covid.parameters if p.name == "reimbursement_rate.consultation").basis_points == 10000
    )
    assert "TE2" not in {e.code for e in covid.entries}
    tc = next(e for e in after.entries if e.code == "TC")
    assert not tc.confirmed and list(tc.unconfirmed_fields) == ["amount"]


async def test_listing_entries_pages_through_every_dated_version(
    hub: billing_pb2_grpc.BillingServiceStub,
) -> None:
    seen: list[str] = []
    token = ""
    while True:
        reply = await hub.ListCatalogEntries(
            billing_pb2.ListCatalogEntriesRequest(parent=CATALOG, page_size=4, page_token=token)
        )
        seen += [e.name for e in reply.entries]
        token = reply.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == len(read_data_file().entries)
    assert f"{CATALOG}/entries/TE2-2026-01-01" in seen
    te2 = await hub.ListCatalogEntries(
        billing_pb2.ListCatalogEntriesRequest(parent=CATALOG, codes=["TE2"], as_of=as_of(2025, 6, 1))
    )
    assert [e.name for e in te2.entries] == [f"{CATALOG}/entries/TE2-2022-04-01"]
    forfaits = await hub.ListCatalogEntries(
        billing_pb2.ListCatalogEntriesRequest(parent=CATALOG, act_type=billing_pb2.ACT_TYPE_TELESURVEILLANCE)
    )
    assert len(forfaits.entries) == 6


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (billing_pb2.ListCatalogEntriesRequest(parent=CATALOG, codes=["TE2", "XYZ9"]), "codes[1]"),
        (billing_pb2.ListCatalogEntriesRequest(parent=CATALOG, as_of=as_of(2025, 2, 29)), "as_of"),
        (billing_pb2.ListCatalogEntriesRequest(parent=CATALOG, codes=["te2"]), "codes[0]"),
        (billing_pb2.GetCatalogRequest(name=CATALOG, as_of=as_of(2024, 13, 1)), "as_of"),
    ],
)
async def test_unknown_codes_and_impossible_dates_name_the_field(
    hub: billing_pb2_grpc.BillingServiceStub, request_: object, field: str
) -> None:
    method = hub.GetCatalog if isinstance(request_, billing_pb2.GetCatalogRequest) else hub.ListCatalogEntries
    error = await call(method(request_))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in details(error)[1]] == [field]


async def test_an_unknown_catalog_is_not_found(hub: billing_pb2_grpc.BillingServiceStub) -> None:
    error = await call(hub.GetCatalog(billing_pb2.GetCatalogRequest(name="catalogs/ccam")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
