"""The billing service: a dated NGAP telemedicine catalog, eligibility rules that explain themselves and an
append-only, idempotent ledger of charges (parcours.billing.v1.BillingService, port 50054)."""
