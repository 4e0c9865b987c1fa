"""Makes catalog version 2026.3 current (issue 13 item 10: télésoin for every profession of the reference, the
physiotherapist's prior in-person visit and its hospital-discharge exception as dated parameters).

The same step as 0002 and 0003: it loads the data file (services/billing/catalog/ngap-telemedicine.toml)
beside the versions already loaded and makes it current; on a new database 0002 already loaded it (a no-op).
"""

from yoyo import step

from services.billing.catalog import load_migration

__depends__ = {"0003.billing-catalog-2026-2"}

steps = [step(load_migration)]
