"""Settings of the billing service."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from services.kit.settings import KitSettings

DEFAULT_PORT = 50054


class BillingSettings(KitSettings):
    component: str = "billing"
    grpc_port: int = Field(
        default=DEFAULT_PORT,
        ge=0,
        le=65535,
        validation_alias=AliasChoices("PARCOURS_BILLING_GRPC_PORT", "PARCOURS_GRPC_PORT"),
    )
    # How long the catalog read from the database is reused before it is read again (a new version loaded by a
    # migration is picked up within this delay, without a restart).
    catalog_refresh_seconds: float = Field(default=60.0, ge=0)
    # The directory (patients' visibility for the caller, practitioners' practice places), called with this
    # component's certificate on behalf of the caller.
    directory_address: str
    # How long the directory's reference data (practitioners, establishments) is reused.
    directory_cache_seconds: float = Field(default=60.0, ge=0)
    # The contracts service: whether an act needing an ARS contract, declaration or agrément is covered at its
    # date, asked with this component's certificate.
    contracts_address: str
    # Covered answers are kept until the contracts' coverage version moves, read at most this often, and at
    # most `contracts_cache_max_age_seconds` in any case (services/billing/contracts.py).
    contracts_cache_check_seconds: float = Field(default=1.0, ge=0)
    contracts_cache_max_age_seconds: float = Field(default=300.0, ge=0)
