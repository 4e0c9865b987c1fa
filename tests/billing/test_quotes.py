"""QuoteAct over real gRPC, as a table of cases drawn from the domain reference (§3 facts, §7 rules).

Each case names the rule it exercises (`§7.n` of french-telemedicine.md, or the ARCHITECTURE section), the act
as a hospital system describes it, and what a billing clerk would read in the answer: the codes and amounts
billable, the refusals and warnings (stable reasons), and where it matters the reimbursement. A case with
`prior` first records the same act at those instants for the same patient (quotas count real ledger lines).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc
from parcours.type.v1 import practice_pb2 as p

from tests.billing.builders import (
    CARDIO_OPERATOR,
    DENTIST,
    GP_CAP,
    GP_PACA,
    GP_PACA_NO_CONTRACT,
    GP_REUNION,
    GP_S2,
    GYNECO,
    MIDWIFE,
    NON_CONVENTIONED,
    NURSE,
    PARIS,
    PEDIATRICIAN,
    PHARMACIST,
    PHYSIO,
    PSY,
    act,
    cents,
    covered,
    first_of_next_month,
    gp,
    md,
    new_patient,
    paris,
    pro,
    teleconsultation,
    teleexpertise,
    utc,
)
from tests.support import request_id

T = billing_pb2
C = billing_pb2.Circumstances
ORIENTED = C(oriented_by_treating_physician=True)
NOT_ORIENTED = C()
SPRING_2025 = paris("2025-03-10 10:00")
PSYCHIATRIST = md(PSY, p.SPECIALTY_PSYCHIATRY)
DERMATOLOGIST = md("10000002001", p.SPECIALTY_DERMATOLOGY)
NURSE_PRO = pro(NURSE, p.PROFESSION_NURSE)
OPERATOR = md(CARDIO_OPERATOR, p.SPECIALTY_CARDIOLOGY)
UNDECLARED_OPERATOR = md("10000001801", p.SPECIALTY_CARDIOLOGY)


@dataclass(frozen=True)
class Case:
    id: str
    rule: str
    act: billing_pb2.Act
    lines: dict[str, int]
    refusals: frozenset[str] = frozenset()
    warnings: frozenset[str] = frozenset()
    reimbursement: dict[str, int] = field(default_factory=dict)
    unconfirmed: bool | None = None
    prior: tuple[datetime, ...] = ()
    prescription_refusals: frozenset[str] = frozenset()


def case(
    id: str,
    rule: str,
    act: billing_pb2.Act,
    lines: dict[str, int],
    *,
    refusals: tuple[str, ...] = (),
    warnings: tuple[str, ...] = (),
    reimbursement: dict[str, int] | None = None,
    unconfirmed: bool | None = None,
    prior: tuple[datetime, ...] = (),
    prescription_refusals: tuple[str, ...] = (),
) -> Case:
    return Case(
        id,
        rule,
        act,
        lines,
        frozenset(refusals),
        frozenset(warnings),
        reimbursement or {},
        unconfirmed,
        prior,
        frozenset(prescription_refusals),
    )


def tlc(when: datetime = SPRING_2025, circumstances: C = ORIENTED, **kw: object) -> billing_pb2.Act:
    return teleconsultation(when, circumstances=circumstances, **kw)  # type: ignore[arg-type]


def ts(level: int = 0, technical: int = 0, listed: bool = True) -> billing_pb2.Telesurveillance:
    return billing_pb2.Telesurveillance(
        operator_level=level, technical_forfait=technical, device_listed=listed, exploitant="512345678"
    )


def leave(days: int, ongoing: int = 0, justified: bool = False) -> billing_pb2.SickLeave:
    return billing_pb2.SickLeave(days=days, ongoing_days=ongoing, in_person_impossible_justified=justified)


CASES = [
    # --- §7.1 acts: téléconseil is never billed; téléassistance and régulation have no code ---
    case(
        "teleconseil-never-billed",
        "§7.1",
        act(T.ACT_TYPE_TELECONSEIL, SPRING_2025, gp()),
        {},
        refusals=("NOT_A_BILLABLE_ACT",),
    ),
    case(
        "teleassistance-no-code",
        "§3.7",
        act(T.ACT_TYPE_TELEASSISTANCE, SPRING_2025, gp()),
        {},
        refusals=("NO_CATALOG_ENTRY",),
    ),
    case(
        "regulation-no-code",
        "§3.7",
        act(T.ACT_TYPE_REGULATION, SPRING_2025, gp()),
        {},
        refusals=("NO_CATALOG_ENTRY",),
    ),
    # --- §7.2 who may perform ---
    case("tlc-by-a-nurse", "§7.2", tlc(performer=NURSE_PRO), {}, refusals=("MEDICAL_PROFESSIONAL_REQUIRED",)),
    case(
        "tle-requis-not-medical",
        "§7.2",
        teleexpertise(SPRING_2025, expert=NURSE_PRO),
        {},
        refusals=("MEDICAL_PROFESSIONAL_REQUIRED",),
    ),
    case(
        "telesoin-by-a-physician",
        "§7.2",
        act(T.ACT_TYPE_TELESOIN, SPRING_2025, gp()),
        {},
        refusals=("TELESOIN_PROFESSIONAL_REQUIRED",),
    ),
    # --- §7.14 dated tariffs, the 2025/2026 TE2 boundary, DROM variants ---
    case(
        "te2-2025-12-31",
        "§7.14",
        teleexpertise(paris("2025-12-31 12:00")),
        {"TE2": 2000, "RQD": 1000},
        reimbursement={"TE2": 2000, "RQD": 1000},
    ),
    case(
        "te2-last-second-of-2025-paris",
        "§7.14",
        teleexpertise(utc("2025-12-31 22:59:59")),
        {"TE2": 2000, "RQD": 1000},
    ),
    case(
        "te2-2026-01-01-paris-while-utc-2025",
        "§7.14",
        teleexpertise(utc("2025-12-31 23:30")),
        {"TE2": 2300, "RQD": 1000},
    ),
    case(
        "te2-drom-2025",
        "§7.14",
        teleexpertise(
            paris("2025-06-02 09:00"), md("10000004201", p.SPECIALTY_NEPHROLOGY), gp(GP_REUNION), region="04"
        ),
        {"TE2": 2400, "RQD": 1200},
    ),
    case(
        "te2-drom-2026",
        "§7.14",
        teleexpertise(
            paris("2026-01-01 09:00"), md("10000004201", p.SPECIALTY_NEPHROLOGY), gp(GP_REUNION), region="04"
        ),
        {"TE2": 2760, "RQD": 1200},
    ),
    case(
        "te2-before-avenant-9-single-level",
        "§7.14",
        teleexpertise(paris("2022-03-15 10:00")),
        {},
        refusals=("NO_TARIFF_AT_DATE",),
    ),
    case("tcg-gp-sector-1", "§7.14", tlc(), {"TCG": 2500}, reimbursement={"TCG": 1550}, unconfirmed=False),
    case(
        "tcg-100-percent-in-2021",
        "§7.20",
        tlc(paris("2021-02-01 10:00"), C(oriented_by_treating_physician=True, patient_seen_in_person=True)),
        {"TCG": 2500},
        reimbursement={"TCG": 2400},
        unconfirmed=True,
    ),
    case(
        "tcg-overseas-no-drom-tariff",
        "§7.14",
        tlc(performer=gp(GP_REUNION), region="04"),
        {"TCG": 2500},
        warnings=("UNCONFIRMED_VALUE",),
        unconfirmed=True,
    ),
    case(
        "tcg-opposable-no-depassement",
        "§3.2",
        tlc(extra_fee_cents=1000),
        {"TCG": 2500},
        refusals=("DEPASSEMENT_NOT_ALLOWED",),
    ),
    case(
        "tc-sector-2-with-depassement",
        "§3.2",
        tlc(performer=gp(GP_S2, p.CONVENTION_SECTOR_2), extra_fee_cents=1000),
        {"TC": 2300},
        warnings=("UNCONFIRMED_VALUE",),
        unconfirmed=True,
    ),
    # --- §7.15 who may bill ---
    case(
        "te2-by-a-midwife",
        "§7.15",
        teleexpertise(paris("2026-02-02 10:00"), expert=pro(MIDWIFE, p.PROFESSION_MIDWIFE)),
        {"TE2": 2300, "RQD": 1000},
    ),
    case(
        "te2-by-a-dentist-outside-care-homes",
        "§7.15",
        teleexpertise(SPRING_2025, expert=pro(DENTIST, p.PROFESSION_DENTIST)),
        {"RQD": 1000},
        refusals=("NOT_BILLABLE_BY_PROFESSION",),
    ),
    case(
        "te2-by-a-dentist-for-a-care-home-resident",
        "§7.15",
        teleexpertise(
            SPRING_2025, expert=pro(DENTIST, p.PROFESSION_DENTIST), circumstances=C(care_home_resident=True)
        ),
        {"TE2": 2000, "RQD": 1000},
        warnings=("UNCONFIRMED_VALUE",),
        unconfirmed=True,
    ),
    case(
        "rqd-not-by-a-pharmacist",
        "§7.15",
        teleexpertise(SPRING_2025, requester=pro(PHARMACIST, p.PROFESSION_PHARMACIST)),
        {"TE2": 2000},
        refusals=("NOT_BILLABLE_BY_PROFESSION",),
    ),
    case(
        "rqd-by-a-nurse", "§7.15", teleexpertise(SPRING_2025, requester=NURSE_PRO), {"TE2": 2000, "RQD": 1000}
    ),
    case(
        "tlc-non-conventioned",
        "§7.15",
        tlc(performer=gp(NON_CONVENTIONED, p.CONVENTION_SECTOR_NON_CONVENTIONED)),
        {},
        refusals=("NOT_BILLABLE_BY_SECTOR",),
    ),
    # --- §7.10 parcours de soins and each of its exceptions ---
    case(
        "outside-parcours-at-the-unconfirmed-30-percent",
        "§7.10",
        tlc(circumstances=NOT_ORIENTED),
        {"TCG": 2500},
        warnings=("OUTSIDE_PARCOURS", "UNCONFIRMED_VALUE"),
        reimbursement={"TCG": 550},
        unconfirmed=True,
    ),
    case(
        "teleconsultant-is-the-mt",
        "§7.10",
        tlc(circumstances=C(performer_is_treating_physician=True)),
        {"TCG": 2500},
        reimbursement={"TCG": 1550},
    ),
    case(
        "psychiatry-oriented-at-45",
        "§7.10",
        tlc(performer=PSYCHIATRIST),
        {"TC": 2300},
        warnings=("UNCONFIRMED_VALUE",),
        reimbursement={"TC": 1410},
    ),
    case(
        "direct-access-gynecology",
        "§7.10",
        tlc(circumstances=NOT_ORIENTED, performer=md(GYNECO, p.SPECIALTY_GYNECOLOGY, p.CONVENTION_SECTOR_2)),
        {"TC": 2300},
        warnings=("UNCONFIRMED_VALUE",),
        reimbursement={"TC": 1410},
    ),
    case(
        "direct-access-pediatrics",
        "§7.10",
        tlc(circumstances=NOT_ORIENTED, performer=md(PEDIATRICIAN, p.SPECIALTY_PEDIATRICS), age=4),
        {"TC": 2300},
        warnings=("UNCONFIRMED_VALUE",),
        reimbursement={"TC": 1610},
    ),
    case(
        "patient-under-16",
        "§7.10",
        tlc(circumstances=NOT_ORIENTED, age=12),
        {"TCG": 2500},
        reimbursement={"TCG": 1750},
        unconfirmed=True,
        warnings=("UNCONFIRMED_VALUE",),
    ),
    case(
        "emergency", "§7.10", tlc(circumstances=C(emergency=True)), {"TCG": 2500}, reimbursement={"TCG": 1550}
    ),
    case(
        "no-mt-zip-resident",
        "§7.10",
        tlc(circumstances=C(no_available_treating_physician=True, zip_resident=True)),
        {"TCG": 2500},
        reimbursement={"TCG": 1550},
    ),
    case(
        "no-mt-teleconsultant-of-the-territory",
        "§7.10",
        tlc(circumstances=C(no_available_treating_physician=True, performer_in_patient_territory=True)),
        {"TCG": 2500},
        reimbursement={"TCG": 1550},
    ),
    case(
        "no-mt-outside-territory-not-zip",
        "§7.10",
        tlc(circumstances=C(no_available_treating_physician=True)),
        {"TCG": 2500},
        warnings=("OUTSIDE_PARCOURS",),
        reimbursement={"TCG": 550},
    ),
    case(
        "zip-alone-is-not-an-exception",
        "§7.10",
        tlc(circumstances=C(zip_resident=True)),
        {"TCG": 2500},
        warnings=("OUTSIDE_PARCOURS",),
        reimbursement={"TCG": 550},
    ),
    case(
        "prisoner", "§7.10", tlc(circumstances=C(prisoner=True)), {"TCG": 2500}, reimbursement={"TCG": 1550}
    ),
    case(
        "ehpad-resident",
        "§7.10",
        tlc(circumstances=C(care_home_resident=True)),
        {"TCG": 2500},
        reimbursement={"TCG": 1550},
    ),
    case(
        "sas-orientation",
        "§7.10",
        tlc(circumstances=C(sas_orientation=True)),
        {"TCG": 2500},
        reimbursement={"TCG": 1550},
    ),
    case(
        "ald-100-percent",
        "§7.20",
        tlc(circumstances=C(oriented_by_treating_physician=True, long_term_condition=True)),
        {"TCG": 2500},
        reimbursement={"TCG": 2300},
    ),
    # Region 93 follows the CNOM 2016 recommendation from COVERED_FROM (a contract with the Ordre's visa out
    # of the parcours), and GP_PACA holds one (the contracts service, conftest).
    case(
        "outside-parcours-region-policy-without-contract",
        "ARCHITECTURE §5",
        tlc(
            covered(),
            circumstances=NOT_ORIENTED,
            performer=gp(GP_PACA_NO_CONTRACT),
            region="93",
            establishment="130000011",
        ),
        {},
        refusals=("REQUIRES_CONTRACT",),
        warnings=("OUTSIDE_PARCOURS",),
    ),
    case(
        "outside-parcours-region-policy-with-contract",
        "ARCHITECTURE §5",
        tlc(
            covered(),
            circumstances=NOT_ORIENTED,
            performer=gp(GP_PACA),
            region="93",
            establishment="130000011",
        ),
        {"TCG": 2500},
        warnings=("OUTSIDE_PARCOURS",),
        reimbursement={"TCG": 550},
    ),
    # --- §7.11 prior in-person contact ---
    case(
        "midwife-tlc-needs-a-prior-visit",
        "§7.11",
        tlc(performer=pro(MIDWIFE, p.PROFESSION_MIDWIFE)),
        {},
        refusals=("PRIOR_IN_PERSON_VISIT_REQUIRED",),
    ),
    case(
        "midwife-tlc-after-a-visit",
        "§7.11",
        tlc(
            performer=pro(MIDWIFE, p.PROFESSION_MIDWIFE),
            circumstances=C(oriented_by_treating_physician=True, patient_seen_in_person=True),
        ),
        {"TCG": 2500},
        warnings=("UNCONFIRMED_VALUE",),
        unconfirmed=True,
    ),
    case(
        "nurse-telesoin-tmi",
        "§7.11",
        act(T.ACT_TYPE_TELESOIN, SPRING_2025, NURSE_PRO, circumstances=C(patient_seen_in_person=True)),
        {"TMI": 315},
        warnings=("UNCONFIRMED_VALUE",),
        unconfirmed=True,
    ),
    case(
        "nurse-telesoin-unknown-patient",
        "§7.11",
        act(T.ACT_TYPE_TELESOIN, SPRING_2025, NURSE_PRO),
        {},
        refusals=("PRIOR_IN_PERSON_VISIT_REQUIRED",),
    ),
    case(
        "physiotherapist-telesoin-unconfirmed-code",
        "§7.11",
        act(
            T.ACT_TYPE_TELESOIN,
            SPRING_2025,
            pro(PHYSIO, p.PROFESSION_PHYSIOTHERAPIST),
            circumstances=C(patient_seen_in_person=True),
        ),
        {"TSP": 0},
        warnings=("UNCONFIRMED_VALUE",),
        unconfirmed=True,
    ),
    # --- §7.12 the remote-activity cap: a warning, 40 % for psychiatrists, MT's own patients excluded ---
    case("cap-below-20", "§7.12", tlc(performer=gp(GP_CAP), activity=(100, 10)), {"TCG": 2500}),
    case(
        "cap-above-20",
        "§7.12",
        tlc(performer=gp(GP_CAP), activity=(50, 10)),
        {"TCG": 2500},
        warnings=("REMOTE_CAP_EXCEEDED",),
    ),
    case(
        "psychiatrist-31-percent-under-40",
        "§7.12",
        tlc(performer=PSYCHIATRIST, activity=(50, 15)),
        {"TC": 2300},
        warnings=("UNCONFIRMED_VALUE",),
    ),
    case(
        "psychiatrist-above-40",
        "§7.12",
        tlc(performer=PSYCHIATRIST, activity=(50, 25)),
        {"TC": 2300},
        warnings=("REMOTE_CAP_EXCEEDED", "UNCONFIRMED_VALUE"),
    ),
    case(
        "psychiatrist-before-convention-2024-capped-at-20",
        "§7.12",
        tlc(paris("2023-11-06 10:00"), performer=PSYCHIATRIST, activity=(50, 15)),
        {"TC": 2300},
        warnings=("REMOTE_CAP_EXCEEDED", "UNCONFIRMED_VALUE"),
    ),
    case(
        "mt-own-patients-not-counted",
        "§7.12",
        tlc(circumstances=C(performer_is_treating_physician=True), activity=(50, 40)),
        {"TCG": 2500},
    ),
    # --- §7.13 téléexpertise: 4 a year per professional and patient, no cumulation, no dépassement ---
    case(
        "te2-fourth-of-the-year",
        "§7.13",
        teleexpertise(paris("2025-09-01 10:00")),
        {"TE2": 2000, "RQD": 1000},
        prior=(paris("2025-02-01 10:00"), paris("2025-03-01 10:00"), paris("2025-04-01 10:00")),
    ),
    case(
        "te2-fifth-of-the-year",
        "§7.13",
        teleexpertise(paris("2025-09-01 10:00")),
        {},
        refusals=("TELEEXPERTISE_QUOTA_EXCEEDED",),
        prior=tuple(paris(f"2025-0{m}-01 10:00") for m in (2, 3, 4, 5)),
    ),
    case(
        "te2-quota-starts-again-on-paris-new-year",
        "§7.13",
        teleexpertise(utc("2025-12-31 23:30")),
        {"TE2": 2300, "RQD": 1000},
        prior=tuple(paris(f"2025-0{m}-01 10:00") for m in (2, 3, 4, 5)),
    ),
    case(
        "te2-fifth-at-paris-new-year-eve",
        "§7.13",
        teleexpertise(utc("2025-12-31 22:30")),
        {},
        refusals=("TELEEXPERTISE_QUOTA_EXCEEDED",),
        prior=tuple(paris(f"2025-0{m}-01 10:00") for m in (2, 3, 4, 5)),
    ),
    case(
        "te2-not-cumulable",
        "§7.13",
        teleexpertise(SPRING_2025, codes=("TCG",)),
        {"TE2": 2000, "RQD": 1000},
        refusals=("NOT_CUMULABLE",),
    ),
    case(
        "te2-no-depassement",
        "§7.13",
        teleexpertise(SPRING_2025, extra_fee_cents=1500),
        {"TE2": 2000, "RQD": 1000},
        refusals=("DEPASSEMENT_NOT_ALLOWED",),
        reimbursement={"TE2": 2000},
    ),
    # --- §7.16 sick leave prescribed remotely ---
    case("sick-leave-3-days", "§7.16", tlc(sick_leave=leave(3)), {"TCG": 2500}),
    # The limit is on the arrêt, not the consultation: the TLC is billed, the arrêt refused with its reason.
    case(
        "sick-leave-4-days",
        "§7.16",
        tlc(sick_leave=leave(4)),
        {"TCG": 2500},
        prescription_refusals=("SICK_LEAVE_OVER_LIMIT",),
    ),
    case(
        "sick-leave-extension-beyond-3",
        "§7.16",
        tlc(sick_leave=leave(2, ongoing=2)),
        {"TCG": 2500},
        prescription_refusals=("SICK_LEAVE_OVER_LIMIT",),
    ),
    case("sick-leave-extension-to-3", "§7.16", tlc(sick_leave=leave(1, ongoing=2)), {"TCG": 2500}),
    # LFSS 2024 applies from 1 January 2024 (the act's civil date where it took place).
    case(
        "sick-leave-last-day-before-lfss-2024",
        "§7.16",
        tlc(paris("2023-12-31 23:30"), sick_leave=leave(4)),
        {"TCG": 2500},
    ),
    case(
        "sick-leave-first-day-of-lfss-2024",
        "§7.16",
        tlc(paris("2024-01-01 00:30"), sick_leave=leave(4)),
        {"TCG": 2500},
        prescription_refusals=("SICK_LEAVE_OVER_LIMIT",),
    ),
    case(
        "sick-leave-by-the-mt",
        "§7.16",
        tlc(sick_leave=leave(7), circumstances=C(performer_is_treating_physician=True)),
        {"TCG": 2500},
    ),
    case("sick-leave-justified", "§7.16", tlc(sick_leave=leave(5, justified=True)), {"TCG": 2500}),
    case(
        "sick-leave-before-lfss-2024",
        "§7.16",
        tlc(paris("2023-12-20 10:00"), sick_leave=leave(5)),
        {"TCG": 2500},
    ),
    # --- §7.18 assistance by a nurse or a pharmacist ---
    case(
        "nurse-assists-at-home",
        "§7.18",
        tlc(assistant=NURSE_PRO, setting=T.ASSISTANCE_SETTING_ORGANISED_AT_HOME),
        {"TCG": 2500, "TLD": 1500},
        warnings=("UNCONFIRMED_VALUE",),
        reimbursement={"TCG": 1550, "TLD": 900},
    ),
    case(
        "pharmacist-assists-in-the-pharmacy",
        "§7.18",
        tlc(assistant=pro(PHARMACIST, p.PROFESSION_PHARMACIST), setting=T.ASSISTANCE_SETTING_PHARMACY),
        {"TCG": 2500, "TLM": 100},
        warnings=("UNCONFIRMED_VALUE",),
    ),
    case(
        "pharmacist-cannot-bill-a-nursing-visit",
        "§7.18",
        tlc(
            assistant=pro(PHARMACIST, p.PROFESSION_PHARMACIST),
            setting=T.ASSISTANCE_SETTING_PLANNED_NURSING_VISIT,
        ),
        {"TCG": 2500},
        refusals=("NOT_BILLABLE_BY_PROFESSION",),
    ),
    # --- §7.19 télésurveillance forfaits (OPERATOR's declaration is effective from COVERED_FROM) ---
    case(
        "telesurveillance-declared-operator",
        "§7.19",
        act(
            T.ACT_TYPE_TELESURVEILLANCE,
            covered(),
            OPERATOR,
            telesurveillance=ts(T.OPERATOR_LEVEL_2, T.TECHNICAL_FORFAIT_MORBIDITY),
        ),
        {"TSO2": 2800, "TST-MOR": 8250},
        warnings=("UNCONFIRMED_VALUE",),
        unconfirmed=True,
    ),
    case(
        "telesurveillance-undeclared-operator",
        "§7.19",
        act(
            T.ACT_TYPE_TELESURVEILLANCE,
            SPRING_2025,
            UNDECLARED_OPERATOR,
            telesurveillance=ts(T.OPERATOR_LEVEL_1),
        ),
        {},
        refusals=("REQUIRES_OPERATOR_DECLARATION",),
    ),
    case(
        "telesurveillance-device-not-listed",
        "§7.19",
        act(
            T.ACT_TYPE_TELESURVEILLANCE,
            covered(),
            OPERATOR,
            telesurveillance=ts(T.OPERATOR_LEVEL_1, T.TECHNICAL_FORFAIT_ORGANISATIONAL, listed=False),
        ),
        {"TSO1": 1100},
        refusals=("DEVICE_NOT_LISTED",),
        warnings=("UNCONFIRMED_VALUE",),
    ),
    case(
        "telesurveillance-once-a-month",
        "§7.19",
        act(
            T.ACT_TYPE_TELESURVEILLANCE,
            covered(23),
            OPERATOR,
            telesurveillance=ts(T.OPERATOR_LEVEL_1),
        ),
        {},
        refusals=("TELESURVEILLANCE_FORFAIT_ALREADY_BILLED",),
        prior=(covered(0, 1),),
    ),
    case(
        "telesurveillance-next-month",
        "§7.19",
        act(
            T.ACT_TYPE_TELESURVEILLANCE,
            datetime.combine(first_of_next_month(), time(10), tzinfo=PARIS),
            OPERATOR,
            telesurveillance=ts(T.OPERATOR_LEVEL_1),
        ),
        {"TSO1": 1100},
        warnings=("UNCONFIRMED_VALUE",),
        prior=(covered(0, 1),),
    ),
    # --- §7.20 dated reimbursement parameters ---
    case(
        "participation-1-euro-until-2024-05-14",
        "§7.20",
        tlc(paris("2024-05-14 10:00")),
        {"TCG": 2500},
        reimbursement={"TCG": 1650},
        unconfirmed=True,
        warnings=("UNCONFIRMED_VALUE",),
    ),
    case(
        "participation-2-euros-from-2024-05-15",
        "§7.20",
        tlc(paris("2024-05-15 10:00")),
        {"TCG": 2500},
        reimbursement={"TCG": 1550},
        unconfirmed=False,
    ),
]


# --- Issue 13: rules the corrected reference changed, each at its boundary dates and ages -------------------


def local(text: str, zone: str) -> datetime:
    """An instant as wall time where the act took place: local('2026-01-01 01:00', 'Indian/Reunion')."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))


def figures(
    given: billing_pb2.Act, conventioned: int, teleconsultations: int, teleexpertises: int = 0, own: int = 0
) -> billing_pb2.Act:
    """The act with the performer's activity of the year (remote-activity cap)."""
    given.performer_activity.CopyFrom(
        billing_pb2.ActivityToDate(
            conventioned_acts=conventioned,
            teleconsultations=teleconsultations,
            teleexpertises=teleexpertises,
            own_patient_teleconsultations=own,
        )
    )
    return given


def cared(given: billing_pb2.Act, in_person: int, remote: int) -> billing_pb2.Act:
    """The act with the patient's care by the teleconsultant over the alternance window."""
    given.care_with_performer.CopyFrom(
        billing_pb2.CareWithPerformer(in_person_acts=in_person, remote_acts=remote)
    )
    return given


NEUROPSYCHIATRIST = md("10000002501", p.SPECIALTY_NEUROPSYCHIATRY)
NEPHROLOGIST = md("10000004201", p.SPECIALTY_NEPHROLOGY)
MT = C(performer_is_treating_physician=True)
NO_MT_UNDERSERVED = C(no_available_treating_physician=True, underserved_zone_resident=True)
SEEN = C(oriented_by_treating_physician=True, patient_seen_in_person=True)
FOUR_IN_2025 = tuple(paris(f"2025-0{m}-01 10:00") for m in (2, 3, 4, 5))


def drom_tle(when: datetime, region: str, establishment: str) -> billing_pb2.Act:
    return teleexpertise(when, NEPHROLOGIST, gp(GP_REUNION), region=region, establishment=establishment)


ISSUE_13_CASES = [
    # §7.10 (corrected §3.2): psychiatry and neuropsychiatry in direct access from the 16th birthday to the
    # day before the 26th; under 16 the age exception applies; from 26 an unoriented TLC is outside the
    # parcours.
    case(
        "psychiatry-under-16-by-the-age-exception",
        "§7.10",
        tlc(circumstances=NOT_ORIENTED, performer=PSYCHIATRIST, age=15),
        {"TC": 2300},
        warnings=("UNCONFIRMED_VALUE",),
        reimbursement={"TC": 1610},
    ),
    case(
        "psychiatry-direct-access-from-the-16th-birthday",
        "§7.10",
        tlc(circumstances=NOT_ORIENTED, performer=PSYCHIATRIST, age=16),
        {"TC": 2300},
        warnings=("UNCONFIRMED_VALUE",),
        reimbursement={"TC": 1610},
    ),
    case(
        "psychiatry-direct-access-until-the-26th-birthday",
        "§7.10",
        tlc(circumstances=NOT_ORIENTED, performer=PSYCHIATRIST, age=25),
        {"TC": 2300},
        warnings=("UNCONFIRMED_VALUE",),
        reimbursement={"TC": 1410},
    ),
    case(
        "psychiatry-outside-parcours-from-the-26th-birthday",
        "§7.10",
        tlc(circumstances=NOT_ORIENTED, performer=PSYCHIATRIST, age=26),
        {"TC": 2300},
        warnings=("OUTSIDE_PARCOURS", "UNCONFIRMED_VALUE"),
        reimbursement={"TC": 490},
    ),
    case(
        "neuropsychiatry-direct-access-at-20",
        "§7.10",
        tlc(circumstances=NOT_ORIENTED, performer=NEUROPSYCHIATRIST, age=20),
        {"TC": 2300},
        warnings=("UNCONFIRMED_VALUE",),
        reimbursement={"TC": 1410},
    ),
    case(
        "neuropsychiatry-outside-parcours-at-40",
        "§7.10",
        tlc(circumstances=NOT_ORIENTED, performer=NEUROPSYCHIATRIST, age=40),
        {"TC": 2300},
        warnings=("OUTSIDE_PARCOURS", "UNCONFIRMED_VALUE"),
        reimbursement={"TC": 490},
    ),
    # §7.14: the tariff date and the quota year are the local civil date where the act took place.
    case(
        "reunion-01h-on-1-january-is-a-2026-act",
        "§7.14",
        drom_tle(local("2026-01-01 01:00", "Indian/Reunion"), "04", "974000013"),
        {"TE2": 2760, "RQD": 1200},
    ),
    case(
        "reunion-quota-year-starts-at-local-midnight",
        "§7.13",
        drom_tle(local("2026-01-01 01:00", "Indian/Reunion"), "04", "974000013"),
        {"TE2": 2760, "RQD": 1200},
        prior=FOUR_IN_2025,
    ),
    case(
        "guadeloupe-22h30-on-31-december-is-a-2025-act",
        "§7.14",
        drom_tle(local("2025-12-31 22:30", "America/Guadeloupe"), "01", "971000010"),
        {"TE2": 2400, "RQD": 1200},
    ),
    case(
        "martinique-23h00-on-31-december-is-a-2025-act",
        "§7.14",
        drom_tle(local("2025-12-31 23:00", "America/Martinique"), "02", "972000018"),
        {"TE2": 2400, "RQD": 1200},
    ),
    case(
        "guyane-23h30-on-31-december-is-a-2025-act",
        "§7.14",
        drom_tle(local("2025-12-31 23:30", "America/Cayenne"), "03", "973000016"),
        {"TE2": 2400, "RQD": 1200},
    ),
    case(
        "guyane-fifth-of-2025-on-local-new-years-eve",
        "§7.13",
        drom_tle(local("2025-12-31 23:30", "America/Cayenne"), "03", "973000016"),
        {},
        refusals=("TELEEXPERTISE_QUOTA_EXCEEDED",),
        prior=FOUR_IN_2025,
    ),
    # §7.12 dated: avenant 9 counted TLC + TLE with no exclusion; the 2024 convention TLC only, the médecin
    # traitant's own patients and every TLE excluded (first day 22 June 2024, unconfirmed until December).
    case(
        "cap-avenant-9-counts-the-mt-own-patients",
        "§7.12",
        figures(tlc(paris("2023-11-06 10:00"), MT, performer=gp(GP_CAP)), 50, 40, own=40),
        {"TCG": 2500},
        warnings=("REMOTE_CAP_EXCEEDED",),
    ),
    case(
        "cap-avenant-9-on-2024-06-21",
        "§7.12",
        figures(tlc(paris("2024-06-21 10:00"), MT, performer=gp(GP_CAP)), 50, 40, own=40),
        {"TCG": 2500},
        warnings=("REMOTE_CAP_EXCEEDED",),
    ),
    case(
        "cap-convention-2024-on-2024-06-22-leaves-out-the-mt-own-patients",
        "§7.12",
        figures(tlc(paris("2024-06-22 10:00"), MT, performer=gp(GP_CAP)), 50, 40, own=40),
        {"TCG": 2500},
        unconfirmed=True,
    ),
    case(
        "cap-convention-2024-counts-other-teleconsultations",
        "§7.12",
        figures(tlc(paris("2025-03-10 10:00"), performer=gp(GP_CAP)), 50, 40, own=30),
        {"TCG": 2500},
        warnings=("REMOTE_CAP_EXCEEDED",),
        unconfirmed=False,
    ),
    case(
        "cap-convention-2024-own-patients-left-out-of-the-count",
        "§7.12",
        figures(tlc(paris("2025-03-10 10:00"), performer=gp(GP_CAP)), 50, 40, own=35),
        {"TCG": 2500},
        unconfirmed=False,
    ),
    case(
        "cap-avenant-9-counts-teleexpertises",
        "§7.12",
        figures(teleexpertise(paris("2023-11-06 10:00")), 50, 5, teleexpertises=6),
        {"TE2": 2000, "RQD": 1000},
        warnings=("REMOTE_CAP_EXCEEDED",),
    ),
    case(
        "cap-convention-2024-leaves-out-teleexpertises",
        "§7.12",
        figures(teleexpertise(paris("2025-03-10 10:00")), 50, 5, teleexpertises=40),
        {"TE2": 2000, "RQD": 1000},
    ),
    # §7.10 dated: territoriality was lifted for any under-served zone before the 2024 convention, for a ZIP
    # only since.
    case(
        "underserved-zone-lifts-territoriality-on-2024-06-21",
        "§7.10",
        tlc(paris("2024-06-21 10:00"), NO_MT_UNDERSERVED),
        {"TCG": 2500},
        reimbursement={"TCG": 1550},
        unconfirmed=True,
    ),
    case(
        "underserved-zone-no-longer-from-2024-06-22",
        "§7.10",
        tlc(paris("2024-06-22 10:00"), NO_MT_UNDERSERVED),
        {"TCG": 2500},
        warnings=("OUTSIDE_PARCOURS", "UNCONFIRMED_VALUE"),
        reimbursement={"TCG": 550},
    ),
    case(
        "underserved-zone-outside-parcours-in-2025",
        "§7.10",
        tlc(paris("2025-03-10 10:00"), NO_MT_UNDERSERVED),
        {"TCG": 2500},
        warnings=("OUTSIDE_PARCOURS", "UNCONFIRMED_VALUE"),
        reimbursement={"TCG": 550},
    ),
    # §7.11 dated: the connaissance préalable of avenant 6, until avenant 9 (TLC part immediate; §7.11's
    # 1 April 2022 leaves the months between unconfirmed).
    case(
        "connaissance-prealable-required-on-2021-09-22",
        "§7.11",
        tlc(paris("2021-09-22 10:00")),
        {},
        refusals=("PRIOR_IN_PERSON_VISIT_REQUIRED",),
    ),
    case(
        "connaissance-prealable-met-on-2021-09-22",
        "§7.11",
        tlc(paris("2021-09-22 10:00"), SEEN),
        {"TCG": 2500},
        reimbursement={"TCG": 2400},
    ),
    case(
        "connaissance-prealable-removed-from-2021-09-23-unconfirmed",
        "§7.11",
        tlc(paris("2021-09-23 10:00")),
        {"TCG": 2500},
        unconfirmed=True,
    ),
    case(
        "connaissance-prealable-removed-in-2025",
        "§7.11",
        tlc(paris("2025-03-10 10:00")),
        {"TCG": 2500},
        unconfirmed=False,
    ),
    # §7.10 alternance of in-person and remote care between the patient and the teleconsultant (per act, a
    # warning; window, share and minimum are unconfirmed parameters).
    case(
        "alternance-too-few-acts-to-judge",
        "§7.10",
        cared(tlc(), 0, 1),
        {"TCG": 2500},
        unconfirmed=True,
    ),
    case(
        "alternance-third-remote-act-without-in-person-care",
        "§7.10",
        cared(tlc(), 0, 2),
        {"TCG": 2500},
        warnings=("ALTERNANCE_NOT_OBSERVED", "UNCONFIRMED_VALUE"),
        unconfirmed=True,
    ),
    case(
        "alternance-80-percent-remote-is-within",
        "§7.10",
        cared(tlc(), 1, 3),
        {"TCG": 2500},
        reimbursement={"TCG": 1550},
    ),
    case(
        "alternance-83-percent-remote-is-not",
        "§7.10",
        cared(tlc(), 1, 4),
        {"TCG": 2500},
        warnings=("ALTERNANCE_NOT_OBSERVED", "UNCONFIRMED_VALUE"),
        reimbursement={"TCG": 1550},
    ),
    case(
        "alternance-counts-the-teleconsultations-the-hub-recorded",
        "§7.10",
        cared(tlc(), 0, 0),
        {"TCG": 2500},
        warnings=("ALTERNANCE_NOT_OBSERVED", "UNCONFIRMED_VALUE"),
        prior=(paris("2024-03-11 10:00"), paris("2025-01-10 10:00")),
    ),
    case(
        "alternance-window-is-the-12-months-up-to-the-act",
        "§7.10",
        cared(tlc(), 0, 0),
        {"TCG": 2500},
        prior=(paris("2024-03-10 10:00"), paris("2025-01-10 10:00")),
        unconfirmed=True,
    ),
    case(
        "alternance-not-checked-before-avenant-9",
        "§7.11",
        cared(tlc(paris("2021-06-01 10:00"), SEEN), 0, 9),
        {"TCG": 2500},
    ),
]
CASES += ISSUE_13_CASES


def test_the_table_is_at_least_forty_cases_each_citing_a_rule() -> None:
    assert len(CASES) >= 40 + len(ISSUE_13_CASES)
    assert len({c.id for c in CASES}) == len(CASES)
    assert all(c.rule.startswith(("§", "ARCHITECTURE")) for c in CASES)


async def _record_prior(hub: billing_pb2_grpc.BillingServiceStub, case: Case, patient: str) -> None:
    for when in case.prior:
        prior = billing_pb2.Act()
        prior.CopyFrom(case.act)
        prior.act_time.FromDatetime(when)
        await hub.RecordAct(
            billing_pb2.RecordActRequest(
                request_id=request_id(), act_id=f"prior-{uuid.uuid4()}", patient=patient, act=prior
            )
        )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_quote(case: Case, hub: billing_pb2_grpc.BillingServiceStub) -> None:
    patient = new_patient()
    await _record_prior(hub, case, patient)
    quote = (await hub.QuoteAct(billing_pb2.QuoteActRequest(act=case.act, patient=patient))).quote

    assert {line.code: cents(line.amount) for line in quote.lines} == case.lines, [
        r.message for r in quote.refusals
    ]
    assert {r.reason for r in quote.refusals} == case.refusals
    assert {r.reason for r in quote.prescription_refusals} == case.prescription_refusals
    assert all(f.message and f.reference == "§7.16" for f in quote.prescription_refusals)
    # §7.18: an assistant's line names the teleconsultant as prescriber on the TLC's date; no other does.
    for line in quote.lines:
        if line.biller_role == billing_pb2.BILLER_ROLE_ASSISTANT:
            assert line.prescriber == case.act.performer.practitioner
            assert line.prescription_date == quote.tariff_date
        else:
            assert not line.prescriber and not line.HasField("prescription_date")
    assert {w.reason for w in quote.warnings} - {"UNCONFIRMED_VALUE"} == case.warnings - {"UNCONFIRMED_VALUE"}
    if "UNCONFIRMED_VALUE" in case.warnings:
        assert "UNCONFIRMED_VALUE" in {w.reason for w in quote.warnings}
    assert quote.billable == bool(case.lines)
    for code, expected in case.reimbursement.items():
        line = next(line for line in quote.lines if line.code == code)
        assert cents(line.reimbursement) == expected, code
    if case.unconfirmed is not None:
        assert quote.unconfirmed == case.unconfirmed
    # The rule is cited, and every rule applied says why; every refusal and warning explains itself.
    cited = {a.reference for a in quote.applied_rules} | {
        f.reference for f in [*quote.refusals, *quote.warnings]
    }
    assert case.rule in cited
    assert all(a.rule and a.reason for a in quote.applied_rules)
    assert all(f.message and f.reference for f in [*quote.refusals, *quote.warnings])
    assert cents(quote.total) == sum(cents(line.amount) + cents(line.extra_fee) for line in quote.lines)
