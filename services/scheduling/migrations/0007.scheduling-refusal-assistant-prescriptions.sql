-- depends: 0004.scheduling-roles

-- Issue 13, items 11, 8 and 2 on the appointment:
-- * the patient's refusal of the teleconsultation (refuses telemedicine, or asks to be seen in person), while it
--   stands: recorded with who and when, cleared when withdrawn (the history keeps both). It supersedes a
--   consent (RefuseTeleconsultation clears it), so the two never stand together.
-- * the nurse or pharmacist who assisted the patient (§7.18), named when the teleconsultation starts, with
--   the setting that chooses their code (TLS, TLL, TLD, TLM).
-- * the prescriptions billing refused while it billed the act (§7.16: an arrêt de travail over the remote
--   limit), as parcours.billing.v1.Finding proto JSON objects.
-- * the teleconsultant's activity of the year given at completion (parcours.billing.v1.ActivityToDate proto
--   JSON), which billing's remote-activity cap needs (§7.12).
ALTER TABLE scheduling.appointments
    ADD COLUMN refusal_kind text,
    ADD COLUMN refusal_time timestamptz,
    ADD COLUMN refusal_recorded_by text,
    ADD COLUMN assistant_rpps text,
    ADD COLUMN assistance_setting text,
    ADD COLUMN billing_prescription_refusals jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN billing_performer_activity jsonb,
    ADD CONSTRAINT appointments_refusal_kind_known CHECK (refusal_kind IN (
        'REFUSAL_KIND_TELEMEDICINE_REFUSED', 'REFUSAL_KIND_IN_PERSON_REQUESTED'
    )),
    ADD CONSTRAINT appointments_refusal_complete CHECK (
        (refusal_kind IS NULL) = (refusal_time IS NULL) AND (refusal_kind IS NULL) = (refusal_recorded_by IS NULL)
    ),
    ADD CONSTRAINT appointments_refusal_supersedes_consent CHECK (refusal_kind IS NULL OR consent_time IS NULL),
    ADD CONSTRAINT appointments_assistant_with_setting CHECK ((assistant_rpps IS NULL) = (assistance_setting IS NULL)),
    ADD CONSTRAINT appointments_assistant_format CHECK (assistant_rpps ~ '^[0-9]{11}$');
