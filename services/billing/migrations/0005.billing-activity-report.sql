-- depends: 0004.billing-idempotency

-- Where each ledger line is billed, for the activity report (GetBillingActivityReport): the ARS region and the
-- GHT of the line's establishment, copied from the directory when the line is recorded (a reversal copies its
-- charge's), as scheduling and expertise keep theirs. The region is the ledger's partition key from here on.
--
-- Lines recorded before this migration carry neither: the directory is another service's, so no SQL here can
-- say where they were billed. They stay in the ledger, in ListCharges and the exports, and the hub-wide report
-- shows them under an empty region; no region's or GHT's report counts them.

ALTER TABLE billing.charges
    ADD COLUMN region_code text,
    ADD COLUMN ght_id text,
    ADD CONSTRAINT charges_region_format CHECK (region_code ~ '^[0-9]{2}$'),
    ADD CONSTRAINT charges_ght_needs_region CHECK (ght_id IS NULL OR region_code IS NOT NULL);

-- A region's or a GHT's lines of a period, read by the report (scoped by one or the other).
CREATE INDEX charges_region_date_idx ON billing.charges (region_code, act_date);
CREATE INDEX charges_ght_date_idx ON billing.charges (ght_id, act_date) WHERE ght_id IS NOT NULL;
