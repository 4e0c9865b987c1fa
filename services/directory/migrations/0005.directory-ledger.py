"""The directory's idempotency table in the kit's one ledger shape (services/kit/idempotency.py).

It gains the payload digest and the resources columns. Rows recorded before keep '' as their digest (checked
on the method only).
"""

from yoyo import step

from services.kit.idempotency import ledger_migration

__depends__ = {"0004.directory-nir-domain-status"}

steps = [step(ledger_migration("directory"))]
