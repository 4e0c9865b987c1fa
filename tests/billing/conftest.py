"""The billing service running in-process over real mTLS, on the suite's database (every migration applied,
so the catalog data file is loaded), and the contracts cases the tests rely on, filed through the contracts
service's API as promoters, officers, the Ordre and the director general would."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from google.type import date_pb2
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc
from parcours.contracts.v1 import contracts_pb2 as c
from parcours.contracts.v1 import contracts_pb2_grpc
from parcours.directory.v1 import directory_pb2_grpc

from services.kit.pki import DevPki
from tests.billing.builders import CARDIO_OPERATOR, COVERED_FROM, GP_PACA, PACA
from tests.conftest import Minter
from tests.directory.builders import register
from tests.support import AUDIENCE, DAUPHINE, ISSUER, LOIRE, bearer, component_channel, establishment_channel
from tests.support import request_id as rid


def _date(day: object) -> date_pb2.Date:
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)  # type: ignore[attr-defined]


def _staff(pki: DevPki, name: str, role: str, **scope: str) -> tuple[tuple[str, str], ...]:
    from services.kit.tokens import mint_token

    token = mint_token(
        signing_key_file=pki.signing_key_file,
        kid=pki.signing_kid,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject=f"staff:{name}",
        profession=None,
        specialty=None,
        roles=[role],
        **scope,
    )
    return bearer(token)


@pytest.fixture(scope="session", autouse=True)
async def contract_cases(
    pki: DevPki, contracts_address: str, paca_follows_cnom: object, mint: Minter
) -> dict[str, str]:
    """GP_PACA's contract in region 93, with the Ordre's visa, active from COVERED_FROM for two years; the
    demo cardiologist's télésurveillance declaration in region 84, effective from COVERED_FROM."""
    console = component_channel(pki, contracts_address, "console")
    dauphine = establishment_channel(pki, contracts_address, DAUPHINE)
    try:
        hub = contracts_pb2_grpc.ContractServiceStub(console)
        # A liberal GP of region 93 files through the hub's portal (no establishment certificate of theirs).
        doctor = bearer(mint(rpps=GP_PACA))
        officer = _staff(pki, "paca", "ars_officer", region=PACA)
        ordre = _staff(pki, "ordre-13", "ordre_reviewer", territory="13")
        signatory = _staff(pki, "paca-dg", "ars_signatory", region=PACA)
        created = await hub.CreateArsContract(
            c.CreateArsContractRequest(
                request_id=rid(),
                ars_contract=c.ArsContract(
                    region=f"regions/{PACA}",
                    departement="13",
                    title="Téléconsultations de soirée hors parcours",
                    activity=c.Activity(
                        act_type=billing_pb2.ACT_TYPE_TELECONSULTATION,
                        offerer=c.OFFERER_LIBERAL_PRACTITIONER,
                        in_parcours=False,
                    ),
                    requested_start_date=_date(COVERED_FROM),
                    requested_end_date=_date(COVERED_FROM + timedelta(days=730)),
                ),
            ),
            metadata=doctor,
        )
        name = created.ars_contract.name
        assert created.ars_contract.visa_required
        await hub.SubmitArsContract(c.SubmitArsContractRequest(request_id=rid(), name=name), metadata=doctor)
        await hub.MarkArsContractComplete(
            c.MarkArsContractCompleteRequest(request_id=rid(), name=name), metadata=officer
        )
        await hub.GiveArsContractVisa(
            c.GiveArsContractVisaRequest(request_id=rid(), name=name), metadata=ordre
        )
        await hub.ApproveArsContract(
            c.ApproveArsContractRequest(request_id=rid(), name=name), metadata=officer
        )
        await hub.PreviewCaseDecision(
            c.PreviewCaseDecisionRequest(
                request_id=rid(), parent=name, kind=c.DECISION_KIND_CONTRACT_APPROVAL
            ),
            metadata=signatory,
        )
        signed = await hub.SignArsContract(
            c.SignArsContractRequest(request_id=rid(), name=name), metadata=signatory
        )
        assert signed.ars_contract.state == c.ArsContract.STATE_ACTIVE

        # The cardiologist practises at 380000024: their declaration is filed through its system.
        cardiologist = bearer(mint(rpps=CARDIO_OPERATOR, specialty="SPECIALTY_CARDIOLOGY"))
        declared = await contracts_pb2_grpc.ContractServiceStub(dauphine).CreateOperatorDeclaration(
            c.CreateOperatorDeclarationRequest(
                request_id=rid(),
                operator_declaration=c.OperatorDeclaration(
                    region="regions/84",
                    departement="38",
                    indications=[c.INDICATION_HEART_FAILURE],
                    device="CardioSuivi 3",
                    device_on_latm_list=True,
                    operator_level=billing_pb2.OPERATOR_LEVEL_2,
                ),
            ),
            metadata=cardiologist,
        )
        acknowledged = await hub.AcknowledgeOperatorDeclaration(
            c.AcknowledgeOperatorDeclarationRequest(
                request_id=rid(), name=declared.operator_declaration.name, effective_date=_date(COVERED_FROM)
            ),
            metadata=_staff(pki, "alice", "ars_officer", region="84"),
        )
        assert acknowledged.operator_declaration.state == c.OperatorDeclaration.STATE_EFFECTIVE
        return {"contract": name, "declaration": declared.operator_declaration.name}
    finally:
        await console.close()
        await dauphine.close()


@pytest.fixture(scope="session")
async def hub(pki: DevPki, billing_address: str) -> billing_pb2_grpc.BillingServiceStub:
    """The billing service as a workflow worker calls it (hub component certificate, no token)."""
    return billing_pb2_grpc.BillingServiceStub(component_channel(pki, billing_address, "workflows"))


def establishment_stub(pki: DevPki, address: str, finess: str) -> billing_pb2_grpc.BillingServiceStub:
    return billing_pb2_grpc.BillingServiceStub(establishment_channel(pki, address, finess))


PatientFactory = Callable[[str], Awaitable[str]]


@pytest.fixture(scope="session")
async def known_at(pki: DevPki, directory_address: str, mint: Minter) -> PatientFactory:
    """known_at(finess) → `patients/{id}` of a fresh patient known (an IPP) at that establishment only."""
    directory = directory_pb2_grpc.DirectoryServiceStub(establishment_channel(pki, directory_address, LOIRE))
    operator = bearer(mint(staff="ops-billing-tests", roles=["hub_operator"]))

    async def create(finess: str) -> str:
        return str((await register(directory, operator, finess)).name)

    return create
