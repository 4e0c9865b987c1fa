"""Billing asks contracts: the same act refused, then billable once the case that covers it is in force — an
operator's declaration acknowledged, a téléconsultation company's agrément granted — and refused again the
day the declaration lapses (the kept answer is dropped when the contracts' coverage version moves)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.type import date_pb2
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc
from parcours.contracts.v1 import contracts_pb2 as c
from parcours.contracts.v1 import contracts_pb2_grpc
from parcours.type.v1 import practice_pb2 as p

from services.kit.pki import DevPki
from tests.billing.builders import COVERED_FROM, act, covered, md, new_patient, teleconsultation
from tests.billing.conftest import _staff
from tests.conftest import Minter
from tests.support import VAL_RHONE, bearer, component_channel, establishment_channel, request_id

T = TypeVar("T")
OPERATOR = "10000001901"  # a cardiologist of 690000019 with no declaration yet


async def eventually(
    probe: Callable[[], Awaitable[T]], until: Callable[[T], bool], within: float = 10.0
) -> T:
    """Await what a background change brings about (the contracts' coverage version read by billing)."""
    async with asyncio.timeout(within):
        while True:
            found = await probe()
            if until(found):
                return found
            await asyncio.sleep(0.02)


def today() -> date_pb2.Date:
    return date_pb2.Date(year=COVERED_FROM.year, month=COVERED_FROM.month, day=COVERED_FROM.day)


async def test_a_forfait_refused_without_a_declaration_is_billed_once_it_is_effective(
    pki: DevPki, hub: billing_pb2_grpc.BillingServiceStub, contracts_address: str, mint: Minter
) -> None:
    forfait = act(
        billing_pb2.ACT_TYPE_TELESURVEILLANCE,
        covered(0, 5),
        md(OPERATOR, p.SPECIALTY_CARDIOLOGY, p.CONVENTION_SECTOR_2),
        establishment=VAL_RHONE,
        telesurveillance=billing_pb2.Telesurveillance(
            operator_level=billing_pb2.OPERATOR_LEVEL_1, device_listed=True
        ),
    )
    patient = new_patient()

    async def quote() -> billing_pb2.Quote:
        return (await hub.QuoteAct(billing_pb2.QuoteActRequest(act=forfait, patient=patient))).quote

    refused = await quote()
    assert [r.reason for r in refused.refusals] == ["REQUIRES_OPERATOR_DECLARATION"] and not refused.billable

    async with (
        establishment_channel(pki, contracts_address, VAL_RHONE) as operator_channel,
        component_channel(pki, contracts_address, "console") as console,
    ):
        operator = contracts_pb2_grpc.ContractServiceStub(operator_channel)
        officer = contracts_pb2_grpc.ContractServiceStub(console)
        operator_token = bearer(mint(rpps=OPERATOR, specialty="SPECIALTY_CARDIOLOGY"))
        declared = (
            await operator.CreateOperatorDeclaration(
                c.CreateOperatorDeclarationRequest(
                    request_id=request_id(),
                    operator_declaration=c.OperatorDeclaration(
                        region="regions/84",
                        departement="69",
                        indications=[c.INDICATION_CARDIAC_ARRHYTHMIA],
                        device="RythmoCare",
                        device_on_latm_list=True,
                        operator_level=billing_pb2.OPERATOR_LEVEL_1,
                    ),
                ),
                metadata=operator_token,
            )
        ).operator_declaration
        alice = _staff(pki, "alice", "ars_officer", region="84")
        await officer.AcknowledgeOperatorDeclaration(
            c.AcknowledgeOperatorDeclarationRequest(
                request_id=request_id(), name=declared.name, effective_date=today()
            ),
            metadata=alice,
        )

        # The same act, asked again: billed (a refusal is never kept), and recorded.
        accepted = await quote()
        assert accepted.billable and [line.code for line in accepted.lines] == ["TSO1"]
        assert any(declared.name in a.reason for a in accepted.applied_rules)
        recorded = await hub.RecordAct(
            billing_pb2.RecordActRequest(
                request_id=request_id(), act_id=f"ts-{uuid.uuid4()}", patient=patient, act=forfait
            )
        )
        assert [charge.code for charge in recorded.charges] == ["TSO1"]

        # The operator's conditions change: the declaration lapses, and the kept answer goes with it.
        await officer.LapseOperatorDeclaration(
            c.LapseOperatorDeclarationRequest(
                request_id=request_id(), name=declared.name, motivation="DMN radié"
            ),
            metadata=alice,
        )
        later = act(
            billing_pb2.ACT_TYPE_TELESURVEILLANCE,
            covered(10, days=40),
            md(OPERATOR, p.SPECIALTY_CARDIOLOGY, p.CONVENTION_SECTOR_2),
            establishment=VAL_RHONE,
            telesurveillance=billing_pb2.Telesurveillance(
                operator_level=billing_pb2.OPERATOR_LEVEL_1, device_listed=True
            ),
        )
        after = await eventually(
            lambda: hub.QuoteAct(billing_pb2.QuoteActRequest(act=later, patient=new_patient())),
            lambda reply: not reply.quote.billable,
        )
        assert [r.reason for r in after.quote.refusals] == ["REQUIRES_OPERATOR_DECLARATION"]


async def test_a_company_doctor_s_teleconsultation_needs_the_company_s_agrement(
    pki: DevPki, hub: billing_pb2_grpc.BillingServiceStub, contracts_address: str
) -> None:
    siren = f"6{uuid.uuid4().int % 10**8:08d}"
    company = f"teleconsultationCompanies/{siren}"
    tlc = teleconsultation(covered())
    tlc.teleconsultation_company = company
    patient = new_patient()
    async with component_channel(pki, contracts_address, "console") as console:
        contracts = contracts_pb2_grpc.ContractServiceStub(console)
        operator = _staff(pki, "dgos", "hub_operator")
        await contracts.CreateTeleconsultationCompany(
            c.CreateTeleconsultationCompanyRequest(
                request_id=request_id(),
                teleconsultation_company=c.TeleconsultationCompany(
                    name=company, legal_name="Soins Partout SAS"
                ),
            ),
            metadata=operator,
        )
        refused = (await hub.QuoteAct(billing_pb2.QuoteActRequest(act=tlc, patient=patient))).quote
        assert [r.reason for r in refused.refusals] == ["REQUIRES_AGREMENT"]
        application = (
            await contracts.CreateAgrementApplication(
                c.CreateAgrementApplicationRequest(
                    request_id=request_id(), agrement_application=c.AgrementApplication(company=company)
                ),
                metadata=operator,
            )
        ).agrement_application
        await contracts.GrantAgrement(
            c.GrantAgrementRequest(request_id=request_id(), name=application.name), metadata=operator
        )
    accepted = (await hub.QuoteAct(billing_pb2.QuoteActRequest(act=tlc, patient=patient))).quote
    assert accepted.billable and [line.code for line in accepted.lines] == ["TCG"]
