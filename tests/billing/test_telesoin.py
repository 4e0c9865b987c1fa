"""Télésoin quotes (issue 13 item 10, §1.2, §3.4, §7.2, §7.11) over real gRPC: every profession of the
reference's télésoin is billed, nurses with TMI, the others under Parcours' unconfirmed TSP line; the
physiotherapist's prior in-person visit at its 12-month boundary (a leap day included) and the
hospital-discharge exception at its own; a psychologist's remote act is no télésoin; a date that does not
exist is refused naming its field."""

from __future__ import annotations

from datetime import date

import grpc
import pytest
from google.type import date_pb2
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc
from parcours.type.v1 import practice_pb2 as p

from tests.billing import test_quotes as quotes
from tests.billing.builders import NURSE, PHYSIO, act, paris, pro
from tests.support.calls import call, details

T = billing_pb2
C = billing_pb2.Circumstances
ACT_DAY = paris("2025-03-10 10:00")  # dated 10 March 2025 in the Loire
LEAP_DAY = paris("2024-02-29 10:00")
PHYSIO_PRO = pro(PHYSIO, p.PROFESSION_PHYSIOTHERAPIST)


def day(value: date) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


def physio(circumstances: C, when: object = ACT_DAY) -> billing_pb2.Act:
    return act(T.ACT_TYPE_TELESOIN, when, PHYSIO_PRO, circumstances=circumstances)  # type: ignore[arg-type]


UNCONFIRMED = {"warnings": ("UNCONFIRMED_VALUE",), "unconfirmed": True}
REFUSED = {"refusals": ("PRIOR_IN_PERSON_VISIT_REQUIRED",)}
CASES = [
    quotes.case(
        "physio-visit-exactly-12-months-before",
        "§7.11",
        physio(C(last_in_person_visit_date=day(date(2024, 3, 10)))),
        {"TSP": 0},
        **UNCONFIRMED,  # type: ignore[arg-type]
    ),
    quotes.case(
        "physio-visit-12-months-and-a-day-before",
        "§7.11",
        physio(C(last_in_person_visit_date=day(date(2024, 3, 9)))),
        {},
        **REFUSED,  # type: ignore[arg-type]
    ),
    quotes.case(
        "physio-visit-the-day-of-the-act",
        "§7.11",
        physio(C(last_in_person_visit_date=day(date(2025, 3, 10)))),
        {"TSP": 0},
        **UNCONFIRMED,  # type: ignore[arg-type]
    ),
    quotes.case(
        "physio-visit-after-the-act-does-not-count",
        "§7.11",
        physio(C(last_in_person_visit_date=day(date(2025, 3, 11)))),
        {},
        **REFUSED,  # type: ignore[arg-type]
    ),
    quotes.case(
        "physio-leap-day-act-visit-28-february-a-year-before",
        "§7.11",
        physio(C(last_in_person_visit_date=day(date(2023, 2, 28))), LEAP_DAY),
        {"TSP": 0},
        **UNCONFIRMED,  # type: ignore[arg-type]
    ),
    quotes.case(
        "physio-leap-day-act-visit-27-february-a-year-before",
        "§7.11",
        physio(C(last_in_person_visit_date=day(date(2023, 2, 27))), LEAP_DAY),
        {},
        **REFUSED,  # type: ignore[arg-type]
    ),
    quotes.case(
        "physio-never-seen-after-hospital-discharge-12-months-before",
        "§7.11",
        physio(C(hospital_discharge_date=day(date(2024, 3, 10)))),
        {"TSP": 0},
        **UNCONFIRMED,  # type: ignore[arg-type]
    ),
    quotes.case(
        "physio-never-seen-hospital-discharge-too-old",
        "§7.11",
        physio(C(hospital_discharge_date=day(date(2024, 3, 9)))),
        {},
        **REFUSED,  # type: ignore[arg-type]
    ),
    quotes.case(
        "physio-old-visit-but-recent-discharge",
        "§7.11",
        physio(
            C(
                last_in_person_visit_date=day(date(2023, 1, 5)),
                hospital_discharge_date=day(date(2025, 2, 20)),
            )
        ),
        {"TSP": 0},
        **UNCONFIRMED,  # type: ignore[arg-type]
    ),
    quotes.case("physio-never-seen", "§7.11", physio(C()), {}, **REFUSED),  # type: ignore[arg-type]
    quotes.case(
        "nurse-telesoin-tmi-with-a-visit-date",
        "§7.11",
        act(
            T.ACT_TYPE_TELESOIN,
            ACT_DAY,
            pro(NURSE, p.PROFESSION_NURSE),
            circumstances=C(patient_seen_in_person=True),
        ),
        {"TMI": 315},
        **UNCONFIRMED,  # type: ignore[arg-type]
    ),
    *[
        quotes.case(
            f"telesoin-{p.Profession.Name(profession).removeprefix('PROFESSION_').lower()}-unconfirmed-code",
            "§7.2",
            act(T.ACT_TYPE_TELESOIN, ACT_DAY, pro("10000005401", profession)),
            {"TSP": 0},
            **UNCONFIRMED,  # type: ignore[arg-type]
        )
        for profession in (
            p.PROFESSION_SPEECH_THERAPIST,
            p.PROFESSION_ORTHOPTIST,
            p.PROFESSION_PHARMACIST,
            p.PROFESSION_PODIATRIST,
            p.PROFESSION_OCCUPATIONAL_THERAPIST,
            p.PROFESSION_PSYCHOMOTOR_THERAPIST,
            p.PROFESSION_DIETITIAN,
            p.PROFESSION_RADIOGRAPHER,
            p.PROFESSION_LABORATORY_TECHNICIAN,
            p.PROFESSION_AUDIOPROSTHETIST,
            p.PROFESSION_OPTICIAN,
            p.PROFESSION_ORTHOTIST_PROSTHETIST,
        )
    ],
    quotes.case(
        "psychologist-remote-act-is-no-telesoin",
        "§7.2",
        act(T.ACT_TYPE_TELESOIN, ACT_DAY, pro("10000005401", p.PROFESSION_PSYCHOLOGIST)),
        {},
        refusals=("TELESOIN_PROFESSIONAL_REQUIRED",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_telesoin_quote(case: quotes.Case, hub: billing_pb2_grpc.BillingServiceStub) -> None:
    await quotes.test_quote(case, hub)


async def test_a_date_that_does_not_exist_is_refused_naming_its_field(
    hub: billing_pb2_grpc.BillingServiceStub,
) -> None:
    given = physio(C(last_in_person_visit_date=date_pb2.Date(year=2024, month=2, day=30)))
    error = await call(hub.QuoteAct(billing_pb2.QuoteActRequest(act=given)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in details(error)[1]] == ["act.circumstances.last_in_person_visit_date"]
