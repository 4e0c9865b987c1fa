"""Makes catalog version 2026.2 current (issue 13: the corrected domain reference).

The same step as 0002: it loads the data file (services/billing/catalog/ngap-telemedicine.toml). On a database
where 0002 loaded 2026.1, this loads 2026.2 beside it and makes it current; on a new database 0002 already
loaded 2026.2 and this is a no-op. The ledger keeps the version each line was priced with, so nothing is
rolled back: the earlier version's rows stay loaded either way.
"""

from yoyo import step

from services.billing.catalog import load_migration

__depends__ = {"0002.billing-catalog"}

steps = [step(load_migration)]
