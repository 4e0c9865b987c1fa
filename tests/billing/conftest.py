"""The billing service running in-process over real mTLS, on the suite's database (every migration applied,
so the catalog data file is loaded), plus the contract-policy rows the tests rely on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date

import asyncpg
import pytest
from parcours.billing.v1 import billing_pb2_grpc
from parcours.directory.v1 import directory_pb2_grpc

from services.billing.contracts import ActivityKind, Requirement, TableContractPolicy
from services.kit.pki import DevPki
from tests.billing.builders import CARDIO_OPERATOR, GP_PACA, PACA
from tests.conftest import Minter
from tests.directory.builders import register
from tests.support import LOIRE, bearer, component_channel, establishment_channel


@pytest.fixture(scope="session", autouse=True)
async def contract_policies(pool: asyncpg.Pool) -> None:
    """Region 93 asks a contract for téléconsultations outside the parcours; one GP there holds one. The
    demo cardiologist operates télésurveillance with a declaration on file in region 84."""
    policy = TableContractPolicy(pool)
    await policy.set_requirement(
        ActivityKind.OUTSIDE_PARCOURS_TELECONSULTATION,
        PACA,
        Requirement.CONTRACT,
        effective_from=date(2024, 1, 1),
        source="test policy of region 93",
    )
    await policy.record_holding(
        ActivityKind.OUTSIDE_PARCOURS_TELECONSULTATION,
        Requirement.CONTRACT,
        holder=f"practitioners/{GP_PACA}",
        region=PACA,
        valid_from=date(2024, 1, 1),
        reference="ARS-93-TLC-2024-017",
    )
    await policy.record_holding(
        ActivityKind.TELESURVEILLANCE_OPERATOR,
        Requirement.DECLARATION,
        holder=f"practitioners/{CARDIO_OPERATOR}",
        region="84",
        valid_from=date(2023, 7, 1),
        reference="DECL-84-TS-0042",
    )


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
