"""Loads the catalog data file (services/billing/catalog/ngap-telemedicine.toml) into schema billing.

The loader is idempotent and refuses a changed file whose version was already loaded. A later catalog change
(a new `version` of the data file) ships with its own migration running the same step again.
"""

from yoyo import step

from services.billing.catalog import load_migration, unload_migration

__depends__ = {"0001.billing-ledger"}

steps = [step(load_migration, unload_migration)]
