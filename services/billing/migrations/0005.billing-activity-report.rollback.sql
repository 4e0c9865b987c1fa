DROP INDEX billing.charges_ght_date_idx;
DROP INDEX billing.charges_region_date_idx;
ALTER TABLE billing.charges
    DROP CONSTRAINT charges_ght_needs_region,
    DROP CONSTRAINT charges_region_format,
    DROP COLUMN ght_id,
    DROP COLUMN region_code;
