ALTER TABLE billing.charges
    DROP CONSTRAINT charges_prescriber_on_assistant_lines,
    DROP CONSTRAINT charges_prescriber_format,
    DROP COLUMN prescriber_rpps;
