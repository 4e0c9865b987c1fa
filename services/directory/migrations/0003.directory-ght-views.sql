-- depends: 0002.directory-regions

-- How an identity known in several GHTs is shared (services/directory/README.md). The INS is national: one
-- patient record per INS, the same opaque id in every GHT. What a GHT records about that identity is its own:
-- its local identifiers (already per establishment) and, from here on, the identity status it established.

-- The identity status per identity domain: a GHT (its establishments share one identity repository), or an
-- establishment outside any GHT. `patients.identity_status` stays the status recorded by the hub itself (hub
-- operators, components, loaders); a domain that recorded none sees that one.
CREATE TABLE directory.patient_domain_statuses (
    patient_id uuid NOT NULL,
    domain text NOT NULL,
    identity_status text NOT NULL,
    update_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT patient_domain_statuses_pkey PRIMARY KEY (patient_id, domain),
    CONSTRAINT patient_domain_statuses_domain_format CHECK (
        domain ~ '^(ghts/[a-z0-9][a-z0-9-]{1,62}|establishments/(?:[0-9]{2}|2[AB])[0-9]{7})$'
    ),
    CONSTRAINT patient_domain_statuses_identity_status_known CHECK (identity_status IN (
        'IDENTITY_STATUS_PROVISIONAL', 'IDENTITY_STATUS_RETRIEVED', 'IDENTITY_STATUS_VALIDATED',
        'IDENTITY_STATUS_QUALIFIED'
    )),
    CONSTRAINT patient_domain_statuses_patient_fkey FOREIGN KEY (patient_id)
        REFERENCES directory.patients (patient_id) ON DELETE CASCADE
);

-- An INS registered by a GHT that does not know it, with strict traits other than those the hub holds, is
-- neither merged into the existing record (it may be another person) nor refused (the refusal would tell that
-- the INS exists elsewhere): it becomes a second record of that INS, pointing at the first, for the identity
-- vigilance of the hub's operators to resolve. One record per INS still holds for every other record.
ALTER TABLE directory.patients ADD COLUMN conflicts_with uuid;
ALTER TABLE directory.patients ADD CONSTRAINT patients_conflicts_with_fkey FOREIGN KEY (conflicts_with)
    REFERENCES directory.patients (patient_id);
ALTER TABLE directory.patients DROP CONSTRAINT patients_ins_key;
CREATE UNIQUE INDEX patients_ins_key ON directory.patients (oid, matricule) WHERE conflicts_with IS NULL;

-- A recorded response is replayed only to the caller that made the request (another caller reusing the id
-- gets REQUEST_ID_REUSED, never someone else's answer).
ALTER TABLE directory.idempotency ADD COLUMN actor text NOT NULL DEFAULT '';
