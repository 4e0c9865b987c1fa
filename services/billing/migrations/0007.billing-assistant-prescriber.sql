-- depends: 0005.billing-activity-report

-- An assisted téléconsultation (§7.18): the nurse's (TLS, TLL, TLD) or pharmacist's (TLM) line carries the
-- teleconsultant's identifier in the prescriber field, with the téléconsultation's date as prescription and
-- execution date (the line's act_date). A reversal copies its charge's. Other lines have none.
ALTER TABLE billing.charges
    ADD COLUMN prescriber_rpps text,
    ADD CONSTRAINT charges_prescriber_format CHECK (prescriber_rpps ~ '^[0-9]{11}$'),
    ADD CONSTRAINT charges_prescriber_on_assistant_lines
        CHECK (prescriber_rpps IS NULL OR biller_role = 'BILLER_ROLE_ASSISTANT');
