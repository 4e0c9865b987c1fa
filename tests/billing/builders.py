"""Acts for the billing tests, written as a hospital system would send them."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from google.protobuf.timestamp_pb2 import Timestamp
from parcours.billing.v1 import billing_pb2
from parcours.type.v1 import practice_pb2 as p

from tests.support import LOIRE, REUNION

PARIS = ZoneInfo("Europe/Paris")
PACA = "93"

# Demo practitioners (services/directory/demo.py), and two who exist only here.
GP = "10000000101"  # GP, sector 1, GHT Loire
GP_S2 = "10000000401"  # GP, sector 2
GP_OPTAM = "10000000301"  # GP, sector 2 OPTAM
GP_CAP = "10000000201"  # GP, sector 1: only the remote-cap cases bill for them
GP_REUNION = "10000001501"  # GP, sector 1, La Réunion
CARDIO_OPERATOR = "10000001701"  # cardiologist, salaried
DERM = "10000002001"  # dermatologist, salaried, GHT Loire
PSY = "10000002401"  # psychiatrist, salaried
GYNECO = "10000003601"  # gynaecologist, sector 2
PEDIATRICIAN = "10000003101"
NURSE = "10000004501"
NURSE_REUNION = "10000005001"
PHARMACIST = "10000005101"
MIDWIFE = "10000005201"
DENTIST = "10000005301"
PHYSIO = "10000005401"
GP_PACA = "10000009901"  # holds an ARS contract with the Ordre's visa in region 93 (see conftest)
GP_PACA_NO_CONTRACT = "10000009801"
NON_CONVENTIONED = "10000009701"


def who(
    rpps: str,
    profession: int = p.PROFESSION_PHYSICIAN,
    specialty: int = p.SPECIALTY_GENERAL_MEDICINE,
    sector: int = p.CONVENTION_SECTOR_1,
) -> billing_pb2.Participant:
    if profession not in (p.PROFESSION_PHYSICIAN, p.PROFESSION_DENTIST):
        specialty = p.SPECIALTY_NONE
    return billing_pb2.Participant(
        practitioner=f"practitioners/{rpps}", profession=profession, specialty=specialty, sector=sector
    )


def gp(rpps: str = GP, sector: int = p.CONVENTION_SECTOR_1) -> billing_pb2.Participant:
    return who(rpps, sector=sector)


def md(rpps: str, specialty: int, sector: int = p.CONVENTION_SECTOR_SALARIED) -> billing_pb2.Participant:
    return who(rpps, p.PROFESSION_PHYSICIAN, specialty, sector)


def pro(rpps: str, profession: int, sector: int = p.CONVENTION_SECTOR_1) -> billing_pb2.Participant:
    return who(rpps, profession, p.SPECIALTY_NONE, sector)


# The day the suite's contracts cases start covering: GP_PACA's contract and CARDIO_OPERATOR's declaration are
# filed through the contracts API when the session starts (conftest), and a declaration is never effective
# before it was filed. Acts that need them are dated from that day.
COVERED_FROM = datetime.now(UTC).astimezone(PARIS).date()


def covered(hour: int = 12, minute: int = 0, days: int = 0) -> datetime:
    """Paris wall time on COVERED_FROM (plus `days`): `covered(0, 1)` is a minute after the day began."""
    return datetime.combine(COVERED_FROM + timedelta(days=days), time(hour, minute), tzinfo=PARIS)


def first_of_next_month(day: date = COVERED_FROM) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


def paris(text: str) -> datetime:
    """An instant written as Paris wall time, e.g. '2025-12-31 23:30'."""
    return datetime.fromisoformat(text).replace(tzinfo=PARIS)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def act(
    act_type: int,
    when: datetime,
    performer: billing_pb2.Participant,
    *,
    requester: billing_pb2.Participant | None = None,
    assistant: billing_pb2.Participant | None = None,
    setting: int = 0,
    age: int = 45,
    region: str = "84",
    establishment: str = LOIRE,
    circumstances: billing_pb2.Circumstances | None = None,
    sick_leave: billing_pb2.SickLeave | None = None,
    telesurveillance: billing_pb2.Telesurveillance | None = None,
    codes: tuple[str, ...] = (),
    extra_fee_cents: int = 0,
    activity: tuple[int, int] | None = None,
) -> billing_pb2.Act:
    stamp = Timestamp()
    stamp.FromDatetime(when.astimezone(UTC))
    overseas = region in {"01", "02", "03", "04", "06"}
    if overseas and establishment == LOIRE:
        establishment = REUNION
    message = billing_pb2.Act(
        type=act_type,
        act_time=stamp,
        establishment=f"establishments/{establishment}",
        region=f"regions/{region}",
        overseas=overseas,
        performer=performer,
        assistance_setting=setting,
        patient_age=age,
        additional_codes=list(codes),
    )
    if requester is not None:
        message.requester.CopyFrom(requester)
    if assistant is not None:
        message.assistant.CopyFrom(assistant)
    if circumstances is not None:
        message.circumstances.CopyFrom(circumstances)
    if sick_leave is not None:
        message.sick_leave.CopyFrom(sick_leave)
    if telesurveillance is not None:
        message.telesurveillance.CopyFrom(telesurveillance)
    if extra_fee_cents:
        message.extra_fee.currency_code = "EUR"
        message.extra_fee.units = extra_fee_cents // 100
        message.extra_fee.nanos = (extra_fee_cents % 100) * 10_000_000
    if activity is not None:
        message.performer_activity.conventioned_acts = activity[0]
        message.performer_activity.teleconsultations = activity[1]
    return message


def teleconsultation(
    when: datetime, performer: billing_pb2.Participant | None = None, **kw: object
) -> billing_pb2.Act:
    kw.setdefault("circumstances", billing_pb2.Circumstances(oriented_by_treating_physician=True))
    return act(billing_pb2.ACT_TYPE_TELECONSULTATION, when, performer or gp(), **kw)  # type: ignore[arg-type]


def teleexpertise(
    when: datetime,
    expert: billing_pb2.Participant | None = None,
    requester: billing_pb2.Participant | None = None,
    **kw: object,
) -> billing_pb2.Act:
    return act(
        billing_pb2.ACT_TYPE_TELEEXPERTISE,
        when,
        expert or md(DERM, p.SPECIALTY_DERMATOLOGY),
        requester=requester or gp(),
        **kw,  # type: ignore[arg-type]
    )


def new_patient() -> str:
    return f"patients/{uuid.uuid4()}"


def cents(money: object) -> int:
    return int(money.units) * 100 + int(money.nanos) // 10_000_000  # type: ignore[attr-defined]
