"""Contracts on the kit's case plumbing: the one idempotency ledger and the one outbox shape."""

from yoyo import step

from services.kit.cases import outbox_migration
from services.kit.idempotency import ledger_migration

__depends__ = {"0001.contracts-schema"}

steps = [
    step(ledger_migration("contracts"), "DROP TABLE contracts.idempotency"),
    step(outbox_migration("contracts"), "DROP TABLE contracts.outbox"),
]
