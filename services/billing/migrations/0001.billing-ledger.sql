-- The billing service's own schema: the dated catalog (loaded from services/billing/catalog/*.toml by 0002),
-- the append-only ledger of charges, the quota counters and the contract policy tables.
--
-- Invariants are constraints, named so that the store can turn a violation into a stable error reason.
-- Enumerated values are stored as proto enum NAMEs. Money is integer cents (EUR).

CREATE SCHEMA billing;

-- Refuses any change to an append-only table (a superuser can still switch triggers off).
CREATE FUNCTION billing.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;

-- --- Catalog ---------------------------------------------------------------------------------------------------
-- One row set per loaded version of the data file; billing.catalogs names the current one.

CREATE TABLE billing.catalog_versions (
    catalog text NOT NULL,
    version text NOT NULL,
    sha256 text NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT catalog_versions_pkey PRIMARY KEY (catalog, version),
    CONSTRAINT catalog_versions_sha256_format CHECK (sha256 ~ '^[0-9a-f]{64}$')
);

CREATE TABLE billing.catalogs (
    catalog text NOT NULL,
    current_version text NOT NULL,
    CONSTRAINT catalogs_pkey PRIMARY KEY (catalog),
    CONSTRAINT catalogs_version_fkey FOREIGN KEY (catalog, current_version)
        REFERENCES billing.catalog_versions (catalog, version)
);

CREATE TABLE billing.catalog_entries (
    catalog text NOT NULL,
    version text NOT NULL,
    code text NOT NULL,
    effective_from date NOT NULL,
    effective_to date,
    label text NOT NULL,
    act_type text NOT NULL,
    biller_role text NOT NULL,
    amount_cents bigint NOT NULL,
    overseas_amount_cents bigint,
    billers jsonb NOT NULL,
    cumulable boolean NOT NULL,
    extra_fee_allowed boolean NOT NULL,
    quota text NOT NULL,
    rate_class text NOT NULL,
    counts_toward_remote_cap boolean NOT NULL,
    assistance_setting text NOT NULL,
    operator_level text NOT NULL,
    technical_forfait text NOT NULL,
    unconfirmed_fields text[] NOT NULL,
    reference text NOT NULL,
    source text NOT NULL,
    position integer NOT NULL,
    CONSTRAINT catalog_entries_pkey PRIMARY KEY (catalog, version, code, effective_from),
    CONSTRAINT catalog_entries_version_fkey FOREIGN KEY (catalog, version)
        REFERENCES billing.catalog_versions (catalog, version),
    CONSTRAINT catalog_entries_code_format CHECK (code ~ '^[A-Z0-9-]{2,16}$'),
    CONSTRAINT catalog_entries_period CHECK (effective_to IS NULL OR effective_to >= effective_from),
    CONSTRAINT catalog_entries_amounts CHECK (amount_cents >= 0 AND coalesce(overseas_amount_cents, 0) >= 0),
    CONSTRAINT catalog_entries_billers_list CHECK (jsonb_typeof(billers) = 'array')
);

CREATE TABLE billing.catalog_parameters (
    catalog text NOT NULL,
    version text NOT NULL,
    name text NOT NULL,
    effective_from date NOT NULL,
    effective_to date,
    kind text NOT NULL,
    number_value bigint,
    text_value text,
    confirmed boolean NOT NULL,
    source text NOT NULL,
    CONSTRAINT catalog_parameters_pkey PRIMARY KEY (catalog, version, name, effective_from),
    CONSTRAINT catalog_parameters_version_fkey FOREIGN KEY (catalog, version)
        REFERENCES billing.catalog_versions (catalog, version),
    CONSTRAINT catalog_parameters_period CHECK (effective_to IS NULL OR effective_to >= effective_from),
    CONSTRAINT catalog_parameters_kind_known CHECK (kind IN ('basis_points', 'money', 'count', 'text')),
    CONSTRAINT catalog_parameters_one_value CHECK (
        (kind = 'text') = (text_value IS NOT NULL) AND (kind <> 'text') = (number_value IS NOT NULL)
    )
);

-- --- Ledger ----------------------------------------------------------------------------------------------------
-- An act is recorded once (its id is the idempotency key); its charge lines, and later the reversal lines that
-- cancel them, are never updated or deleted.

CREATE TABLE billing.acts (
    act_id text NOT NULL,
    request_id uuid NOT NULL,
    -- SHA-256 of the recorded request's patient and act: the same act id with other content is refused.
    digest bytea NOT NULL,
    patient_id uuid NOT NULL,
    establishment text NOT NULL,
    act_type text NOT NULL,
    act_time timestamptz NOT NULL,
    act_date date NOT NULL,
    -- The parcours.billing.v1.Quote of the recording (refusals, warnings, rules applied), returned on retries.
    quote bytea NOT NULL,
    recorded_by text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT acts_pkey PRIMARY KEY (act_id),
    CONSTRAINT acts_request_id_key UNIQUE (request_id),
    CONSTRAINT acts_act_id_format CHECK (act_id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'),
    CONSTRAINT acts_establishment_format CHECK (establishment ~ '^(?:[0-9]{2}|2[AB])[0-9]{7}$'),
    CONSTRAINT acts_digest_length CHECK (length(digest) = 32)
);

CREATE TABLE billing.charges (
    seq bigint GENERATED ALWAYS AS IDENTITY,
    charge_id uuid NOT NULL,
    kind text NOT NULL,
    act_id text NOT NULL,
    line integer NOT NULL,
    code text NOT NULL,
    label text NOT NULL,
    biller_role text NOT NULL,
    practitioner_rpps text,
    exploitant text,
    establishment text NOT NULL,
    patient_id uuid NOT NULL,
    act_type text NOT NULL,
    act_time timestamptz NOT NULL,
    act_date date NOT NULL,
    amount_cents bigint NOT NULL,
    extra_fee_cents bigint NOT NULL,
    reimbursement_rate_bp integer NOT NULL,
    reimbursement_cents bigint NOT NULL,
    participation_cents bigint NOT NULL,
    overseas boolean NOT NULL,
    catalog_entry text NOT NULL,
    catalog_version text NOT NULL,
    unconfirmed boolean NOT NULL,
    quota_key text,
    quota_slot integer,
    counts_toward_remote_cap boolean NOT NULL,
    reverses uuid,
    reversal_reason text,
    reversal_note text,
    -- The ReverseCharge request that wrote a reversal line (its idempotency key).
    request_id uuid,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT charges_pkey PRIMARY KEY (charge_id),
    CONSTRAINT charges_seq_key UNIQUE (seq),
    -- One charge per line of an act, one reversal per charge line: retries can never add lines.
    CONSTRAINT charges_line_key UNIQUE (act_id, line, kind),
    CONSTRAINT charges_reverses_key UNIQUE (reverses),
    CONSTRAINT charges_request_id_key UNIQUE (request_id),
    CONSTRAINT charges_act_fkey FOREIGN KEY (act_id) REFERENCES billing.acts (act_id),
    CONSTRAINT charges_reverses_fkey FOREIGN KEY (reverses) REFERENCES billing.charges (charge_id),
    CONSTRAINT charges_kind_known CHECK (kind IN ('KIND_CHARGE', 'KIND_REVERSAL')),
    CONSTRAINT charges_reversal_shape CHECK (
        (kind = 'KIND_REVERSAL') = (reverses IS NOT NULL)
        AND (kind = 'KIND_REVERSAL') = (reversal_reason IS NOT NULL)
        AND (kind = 'KIND_REVERSAL') = (request_id IS NOT NULL)
    ),
    CONSTRAINT charges_signs CHECK (
        CASE kind WHEN 'KIND_CHARGE'
            THEN amount_cents >= 0 AND extra_fee_cents >= 0 AND reimbursement_cents >= 0
            ELSE amount_cents <= 0 AND extra_fee_cents <= 0 AND reimbursement_cents <= 0
        END
    ),
    CONSTRAINT charges_rate_range CHECK (reimbursement_rate_bp BETWEEN 0 AND 10000),
    CONSTRAINT charges_biller CHECK (
        coalesce(practitioner_rpps ~ '^[0-9]{11}$', false) OR coalesce(exploitant ~ '^[0-9]{9}$', false)
    ),
    CONSTRAINT charges_establishment_format CHECK (establishment ~ '^(?:[0-9]{2}|2[AB])[0-9]{7}$')
);
CREATE INDEX charges_practitioner_idx ON billing.charges (practitioner_rpps, act_date, act_time, seq);
CREATE INDEX charges_establishment_idx ON billing.charges (establishment, act_date, act_time, seq);
CREATE INDEX charges_patient_idx ON billing.charges (patient_id, act_date, act_time, seq);
CREATE INDEX charges_act_idx ON billing.charges (act_id, line);

CREATE TRIGGER acts_append_only BEFORE UPDATE OR DELETE ON billing.acts
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_change();
CREATE TRIGGER acts_no_truncate BEFORE TRUNCATE ON billing.acts
    FOR EACH STATEMENT EXECUTE FUNCTION billing.refuse_change();
CREATE TRIGGER charges_append_only BEFORE UPDATE OR DELETE ON billing.charges
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_change();
CREATE TRIGGER charges_no_truncate BEFORE TRUNCATE ON billing.charges
    FOR EACH STATEMENT EXECUTE FUNCTION billing.refuse_change();

-- --- Quotas ----------------------------------------------------------------------------------------------------
-- One row per counting key (e.g. téléexpertise, requis side, professional, patient, year). A slot is taken by
-- `INSERT ... ON CONFLICT DO UPDATE SET used = used + 1 WHERE used < max`, which locks the row: two acts
-- recorded at once for the same key queue on it, and only one of them can take the last slot.

CREATE TABLE billing.quota_counters (
    counter_key text NOT NULL,
    used integer NOT NULL,
    update_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT quota_counters_pkey PRIMARY KEY (counter_key),
    CONSTRAINT quota_counters_used_range CHECK (used >= 0)
);

-- --- Contract policy (until the contracts service answers) ---------------------------------------------------
-- What an activity needs from the ARS, per region ('*': national) and date, and what is held.

CREATE TABLE billing.contract_requirements (
    activity text NOT NULL,
    region_code text NOT NULL,
    effective_from date NOT NULL,
    effective_to date,
    requirement text NOT NULL,
    source text NOT NULL,
    CONSTRAINT contract_requirements_pkey PRIMARY KEY (activity, region_code, effective_from),
    CONSTRAINT contract_requirements_activity_known CHECK (
        activity IN ('TELESURVEILLANCE_OPERATOR', 'OUTSIDE_PARCOURS_TELECONSULTATION')
    ),
    CONSTRAINT contract_requirements_region_format CHECK (region_code ~ '^([0-9]{2}|\*)$'),
    CONSTRAINT contract_requirements_requirement_known CHECK (requirement IN ('NONE', 'DECLARATION', 'CONTRACT')),
    CONSTRAINT contract_requirements_period CHECK (effective_to IS NULL OR effective_to >= effective_from)
);

CREATE TABLE billing.contract_holdings (
    holding_id bigint GENERATED ALWAYS AS IDENTITY,
    activity text NOT NULL,
    kind text NOT NULL,
    -- practitioners/{rpps} or establishments/{finess}
    holder text NOT NULL,
    region_code text NOT NULL,
    valid_from date NOT NULL,
    valid_to date,
    reference text NOT NULL,
    CONSTRAINT contract_holdings_pkey PRIMARY KEY (holding_id),
    CONSTRAINT contract_holdings_kind_known CHECK (kind IN ('DECLARATION', 'CONTRACT')),
    CONSTRAINT contract_holdings_holder_format CHECK (
        holder ~ '^(practitioners/[0-9]{11}|establishments/(?:[0-9]{2}|2[AB])[0-9]{7})$'
    ),
    CONSTRAINT contract_holdings_region_format CHECK (region_code ~ '^[0-9]{2}$'),
    CONSTRAINT contract_holdings_period CHECK (valid_to IS NULL OR valid_to >= valid_from)
);
CREATE INDEX contract_holdings_holder_idx ON billing.contract_holdings (holder, activity, region_code);

-- Télésurveillance operators must declare their activity to the ARS; the declaration conditions the forfaits
-- (décrets 2022-1767 and 2022-1769; droit commun since 1 July 2023).
INSERT INTO billing.contract_requirements (activity, region_code, effective_from, requirement, source)
VALUES ('TELESURVEILLANCE_OPERATOR', '*', '2023-07-01', 'DECLARATION',
        'Décrets 2022-1767 and 2022-1769 of 30 Dec 2022; sante.gouv.fr "Vous êtes opérateur de télésurveillance ?" (H)');
