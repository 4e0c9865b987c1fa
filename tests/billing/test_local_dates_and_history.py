"""What the corrected reference changes beyond a single quote (issue 13), over real gRPC and the real ledger:
the act's local civil date follows it into the ledger and its period filters (§7.14); the alternance floor
counts the téléconsultations the hub recorded for the pair, net of reversals (§7.10); the remote-activity cap
counts a requesting physician's téléexpertises under avenant 9 only (§7.12); the catalog says which rules are
in force on a date and refuses a misspelt list value."""

from __future__ import annotations

import random
import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

import grpc
import pytest
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc
from parcours.type.v1 import practice_pb2 as p

from services.billing.catalog import DATA_FILE, CatalogError, parse, read_data_file
from tests.billing.builders import cents, gp, md, new_patient, paris, teleconsultation, teleexpertise
from tests.support import request_id
from tests.support.calls import call, details

CATALOG = "catalogs/ngap-telemedicine"


def local(text: str, zone: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))


def record(act: billing_pb2.Act, patient: str) -> billing_pb2.RecordActRequest:
    return billing_pb2.RecordActRequest(
        request_id=request_id(), act_id=f"act-{uuid.uuid4()}", patient=patient, act=act
    )


def someone() -> str:
    """An RPPS of this test's own, so that no other test's ledger lines count for it."""
    return "3" + "".join(random.choices("0123456789", k=10))


def day(message: object) -> tuple[int, int, int]:
    return (message.year, message.month, message.day)  # type: ignore[attr-defined]


async def test_an_overseas_act_is_dated_where_it_took_place_in_the_quote_and_the_ledger(
    hub: billing_pb2_grpc.BillingServiceStub,
) -> None:
    patient = new_patient()
    # 01:00 on 1 January in La Réunion: still 31 December (22:00) in Paris.
    reunion = teleexpertise(
        local("2026-01-01 01:00", "Indian/Reunion"),
        md(someone(), p.SPECIALTY_NEPHROLOGY),
        gp(someone()),
        region="04",
    )
    quote = (await hub.QuoteAct(billing_pb2.QuoteActRequest(act=reunion, patient=patient))).quote
    assert day(quote.tariff_date) == (2026, 1, 1)
    dated = next(a for a in quote.applied_rules if a.rule == "TARIFF_DATE")
    assert "Indian/Reunion" in dated.reason and "2026-01-01" in dated.reason and dated.reference == "§7.14"
    recorded = await hub.RecordAct(record(reunion, patient))
    assert {c.code: cents(c.amount) for c in recorded.charges} == {"TE2": 2760, "RQD": 1200}
    assert {day(c.act_date) for c in recorded.charges} == {(2026, 1, 1)}

    # 23:30 on 31 December in Guyane: already 1 January (03:30) in Paris.
    guyane = teleconsultation(
        local("2025-12-31 23:30", "America/Cayenne"), gp(someone()), region="03", establishment="973000016"
    )
    await hub.RecordAct(record(guyane, patient))
    listed = await hub.ListCharges(
        billing_pb2.ListChargesRequest(
            patient=patient,
            start_date={"year": 2025, "month": 12, "day": 31},
            end_date={"year": 2025, "month": 12, "day": 31},
        )
    )
    assert [c.code for c in listed.charges] == ["TCG"]
    assert day(listed.charges[0].act_date) == (2025, 12, 31)


async def test_the_alternance_floor_counts_the_pairs_recorded_teleconsultations_net_of_reversals(
    hub: billing_pb2_grpc.BillingServiceStub,
) -> None:
    doctor, patient = gp(someone()), new_patient()
    recorded = []
    for when in ("2025-01-06 10:00", "2025-02-03 10:00"):
        reply = await hub.RecordAct(record(teleconsultation(paris(when), doctor), patient))
        recorded.append(reply.charges[0].name)
    # The same doctor's téléconsultation of another patient does not count for this pair.
    await hub.RecordAct(record(teleconsultation(paris("2025-02-10 10:00"), doctor), new_patient()))

    # The doctor's system declares no care of the patient: the hub knows of two téléconsultations.
    act = teleconsultation(paris("2025-03-10 10:00"), doctor)
    act.care_with_performer.CopyFrom(billing_pb2.CareWithPerformer(in_person_acts=0, remote_acts=0))
    quote = (await hub.QuoteAct(billing_pb2.QuoteActRequest(act=act, patient=patient))).quote
    warning = next(w for w in quote.warnings if w.reason == "ALTERNANCE_NOT_OBSERVED")
    assert warning.message.startswith("3 of the pair's 3 acts over 12 months are remote")
    assert warning.reference == "§7.10" and "art. 87-3" in warning.source
    assert quote.unconfirmed and "UNCONFIRMED_VALUE" in {w.reason for w in quote.warnings}

    # One of them was recorded in error: two acts in all, too few to judge.
    await hub.ReverseCharge(
        billing_pb2.ReverseChargeRequest(
            request_id=request_id(), name=recorded[0], reason=billing_pb2.REVERSAL_REASON_ENTERED_IN_ERROR
        )
    )
    quote = (await hub.QuoteAct(billing_pb2.QuoteActRequest(act=act, patient=patient))).quote
    assert "ALTERNANCE_NOT_OBSERVED" not in {w.reason for w in quote.warnings}
    judged = next(a for a in quote.applied_rules if a.rule == "ALTERNANCE")
    assert "too few to judge" in judged.reason and not judged.confirmed


@pytest.mark.parametrize(
    ("year", "counted"),
    [
        pytest.param(2023, True, id="avenant-9-counts-the-requesters-teleexpertise"),
        pytest.param(2025, False, id="convention-2024-does-not"),
    ],
)
async def test_a_requesting_physicians_teleexpertise_counts_toward_their_cap_under_avenant_9_only(
    hub: billing_pb2_grpc.BillingServiceStub, year: int, counted: bool
) -> None:
    requester = gp(someone())
    tle = await hub.RecordAct(
        record(teleexpertise(paris(f"{year}-03-06 10:00"), requester=requester), new_patient())
    )
    rqd = next(c for c in tle.charges if c.code == "RQD")
    assert rqd.counts_toward_remote_cap is counted
    # The same physician's téléconsultation later that year, their system declaring 5 acts, none remote.
    act = teleconsultation(paris(f"{year}-03-20 10:00"), requester, activity=(5, 0))
    quote = (await hub.QuoteAct(billing_pb2.QuoteActRequest(act=act))).quote
    cap = next(a for a in quote.applied_rules if a.rule == "REMOTE_CAP")
    assert cap.reason.startswith(f"TCG: {2 if counted else 1} remote of 6 acts this year")
    assert ("REMOTE_CAP_EXCEEDED" in {w.reason for w in quote.warnings}) is counted


async def test_own_patients_beyond_the_teleconsultations_declared_is_invalid(
    hub: billing_pb2_grpc.BillingServiceStub,
) -> None:
    act = teleconsultation(paris("2025-03-10 10:00"), activity=(50, 3))
    act.performer_activity.own_patient_teleconsultations = 4
    error = await call(hub.QuoteAct(billing_pb2.QuoteActRequest(act=act)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in details(error)[1]] == ["act.performer_activity"]


async def test_the_catalog_says_which_remote_cap_and_territoriality_rules_are_in_force(
    hub: billing_pb2_grpc.BillingServiceStub,
) -> None:
    def parameters(catalog: billing_pb2.Catalog) -> dict[str, billing_pb2.Parameter]:
        return {p.name: p for p in catalog.parameters}

    async def on(year: int, month: int, day_: int) -> dict[str, billing_pb2.Parameter]:
        reply = await hub.GetCatalog(
            billing_pb2.GetCatalogRequest(name=CATALOG, as_of={"year": year, "month": month, "day": day_})
        )
        assert reply.catalog.version == read_data_file().version == "2026.3"
        return parameters(reply.catalog)

    avenant_9 = await on(2024, 6, 21)
    assert avenant_9["remote_cap.counted_act_types"].text == "TELECONSULTATION,TELEEXPERTISE,TELESOIN"
    assert "remote_cap.excluded" not in avenant_9 and "remote_cap.psychiatry" not in avenant_9
    assert avenant_9["parcours.territoriality_exception_zones"].text == "UNDERSERVED"
    early_2024 = await on(2024, 6, 22)
    assert early_2024["remote_cap.counted_act_types"].text == "TELECONSULTATION,TELESOIN"
    assert not early_2024["remote_cap.counted_act_types"].confirmed
    convention = await on(2025, 3, 10)
    assert convention["remote_cap.excluded"].text == "TREATING_PHYSICIAN_OWN_PATIENTS"
    assert (
        convention["remote_cap.psychiatry"].basis_points == 4000
        and convention["remote_cap.psychiatry"].confirmed
    )
    assert convention["parcours.territoriality_exception_zones"].text == "ZIP"
    assert convention["parcours.direct_access_by_age.specialties"].text == "PSYCHIATRY,NEUROPSYCHIATRY"
    assert "PSYCHIATRY" not in convention["parcours.direct_access_specialties"].text
    outside = convention["reimbursement_rate.outside_parcours"]
    assert outside.basis_points == 3000 and not outside.confirmed and "disagrees" in outside.source
    assert all(not convention[f"alternance.{n}"].confirmed for n in ("window_months", "max_remote_share"))
    before_avenant_9 = await on(2021, 9, 22)
    assert before_avenant_9["prior_visit.physician_teleconsultation_months"].count == 12
    assert "alternance.window_months" not in before_avenant_9


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (('text = "PSYCHIATRY,NEUROPSYCHIATRY"', 'text = "PSYCHIATRIE"'), "unknown values ['PSYCHIATRIE']"),
        (('text = "TELECONSULTATION,TELESOIN"', 'text = "TLC,TELESOIN"'), "unknown values ['TLC']"),
        (('text = "UNDERSERVED"', 'text = "ZAC"'), "unknown values ['ZAC']"),
    ],
)
def test_a_misspelt_list_value_is_refused_by_the_catalog_check(change: tuple[str, str], problem: str) -> None:
    text = DATA_FILE.read_text(encoding="utf-8")
    assert change[0] in text
    with pytest.raises(CatalogError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        parse(text.replace(change[0], change[1], 1))
