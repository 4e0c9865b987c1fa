"""Settings of the directory service."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from services.kit.settings import KitSettings

DEFAULT_PORT = 50051


class DirectorySettings(KitSettings):
    component: str = "directory"
    grpc_port: int = Field(
        default=DEFAULT_PORT,
        ge=0,
        le=65535,
        validation_alias=AliasChoices("PARCOURS_DIRECTORY_GRPC_PORT", "PARCOURS_GRPC_PORT"),
    )
    # How long practice places and establishments read for the token-binding check are reused: a change of
    # practice places takes effect within this delay.
    reference_cache_seconds: float = Field(default=60.0, ge=0)
