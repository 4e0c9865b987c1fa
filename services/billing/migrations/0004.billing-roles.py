"""The billing role, parcours_billing, reads and writes the billing schema and nothing else
(services/kit/roles.py): the catalog is loaded by migrations (read only to the service), and the ledger is
appended to, never changed (its triggers refuse it too; without the privilege the service cannot even try)."""

from yoyo import step

from services.kit.roles import grants_sql

__depends__ = {"0003.billing-catalog-2026-2"}

steps = [
    step(
        grants_sql(
            "billing",
            read_only=["catalog_versions", "catalogs", "catalog_entries", "catalog_parameters"],
            append_only=["acts", "charges"],
        )
    )
]
