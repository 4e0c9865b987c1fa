-- depends: 0003.billing-catalog-2026-2

-- The contract policy is the contracts service's now (services/billing/contracts.py asks its CheckCoverage):
-- billing's own policy tables, which answered until it existed, go. Their holdings were development data
-- (tests, demos); the contracts service's cases (declarations, contracts with their visa, agréments) are what
-- covers an act.

DROP TABLE billing.contract_holdings;
DROP TABLE billing.contract_requirements;
