"""The contracts role, parcours_contracts, reads and writes the contracts schema and nothing else
(services/kit/roles.py); the contracts worker connects as it too. A region's published policy versions are
append-only: the role cannot even try to change one (the table's trigger refuses it as well)."""

from yoyo import step

from services.kit.roles import grants_sql

__depends__ = {"0002.contracts-case-kit"}

steps = [step(grants_sql("contracts", append_only=["region_policies"]))]
