-- The contracts service's own schema: ARS contracts, operator declarations, intermediary contract reviews and
-- agrément applications (the cases), what they append (timeline, messages, comments, opinions, documents,
-- decisions), the region policy versions, the agrément register and the motivation templates.
--
-- Two writers, one owner each. The service writes a case when it is created (its content, which never travels
-- through Temporal), the views of a case, documents' bytes, decision previews, policy versions, companies and
-- templates. From creation on, the case's workflow owns its state: every change is written by its projection
-- activity in one transaction, guarded by `version` (a late retry of an older change never overwrites a newer
-- one) and keyed by the workflow's sequences (a retried write appends nothing twice). States, steps, kinds
-- and reasons are stored as the API's enum names without their prefix.

CREATE SCHEMA contracts;

-- --- the contract-requirement policy -------------------------------------------------------------------------

-- A region's policy versions: published once, never edited (a trigger refuses it), so what was evaluated for a
-- past date stays what it was.
CREATE TABLE contracts.region_policies (
    region text NOT NULL,
    version integer NOT NULL,
    effective_date date NOT NULL,
    profile text NOT NULL,
    -- CNOM 2016: the offers that count as commercial; NULL keeps the national list.
    cnom_offerers text[],
    note text NOT NULL DEFAULT '',
    publisher text NOT NULL,
    publish_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT region_policies_pkey PRIMARY KEY (region, version),
    CONSTRAINT region_policies_effective_date_key UNIQUE (region, effective_date),
    CONSTRAINT region_policies_region_format CHECK (region ~ '^[0-9]{2}$'),
    CONSTRAINT region_policies_version_positive CHECK (version >= 1),
    CONSTRAINT region_policies_profile_known CHECK (profile IN ('NATIONAL', 'CNOM_2016'))
);

CREATE FUNCTION contracts.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% of %.% is not allowed: published rows are never changed', TG_OP, TG_TABLE_SCHEMA,
        TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER region_policies_append_only BEFORE UPDATE OR DELETE ON contracts.region_policies
    FOR EACH ROW EXECUTE FUNCTION contracts.refuse_change();

-- What coverage answers depend on changed: a contract, declaration or agrément came into force or left it, or a
-- region published a version. Billing keeps coverage answers until this moves (services/billing/contracts.py).
CREATE TABLE contracts.coverage_version (
    one boolean NOT NULL DEFAULT true,
    version bigint NOT NULL DEFAULT 1,
    update_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT coverage_version_pkey PRIMARY KEY (one),
    CONSTRAINT coverage_version_single_row CHECK (one)
);
INSERT INTO contracts.coverage_version DEFAULT VALUES;

-- --- the agrément register -----------------------------------------------------------------------------------

CREATE TABLE contracts.companies (
    siren text NOT NULL,
    legal_name text NOT NULL,
    ans_certificate text NOT NULL DEFAULT '',
    creator text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT companies_pkey PRIMARY KEY (siren),
    CONSTRAINT companies_siren_format CHECK (siren ~ '^[0-9]{9}$')
);

-- --- cases -----------------------------------------------------------------------------------------------------

CREATE TABLE contracts.cases (
    case_id uuid NOT NULL,
    kind text NOT NULL,
    -- The client's idempotency key of the creation, and the workflow that owns the case.
    request_id uuid NOT NULL,
    workflow_id text NOT NULL,
    -- Scope: the ARS region, the département, the GHT ('' none), the promoter, who filed it (the promoter's
    -- side of an agrément filed for a company) and the person who created it.
    region text NOT NULL,
    departement text NOT NULL DEFAULT '',
    ght text NOT NULL DEFAULT '',
    promoter text NOT NULL,
    filer text NOT NULL,
    creator text NOT NULL,
    -- The inbox's title: a contract's title, a declaration's device, a review's or agrément's company.
    title text NOT NULL,
    -- The resource as created (a parcours.contracts.v1 message): the part of Get nobody changes.
    resource bytea NOT NULL,
    -- The workflow's input, so the relay can start (or restart) it.
    start_state jsonb NOT NULL,
    -- Written by the workflow from here on.
    state text NOT NULL,
    version bigint NOT NULL DEFAULT 0,
    case_state jsonb,
    step text NOT NULL DEFAULT '',
    step_role text NOT NULL DEFAULT '',
    claimant text NOT NULL DEFAULT '',
    claim_time timestamptz,
    step_open_time timestamptz,
    due_time timestamptz,
    reminded boolean NOT NULL DEFAULT false,
    overdue boolean NOT NULL DEFAULT false,
    escalated boolean NOT NULL DEFAULT false,
    legal_deadline_time timestamptz,
    legal_clock_suspended boolean NOT NULL DEFAULT false,
    expire_time timestamptz,
    closed boolean NOT NULL DEFAULT false,
    ordre_territory text NOT NULL DEFAULT '',
    open_opinions integer NOT NULL DEFAULT 0,
    decider text NOT NULL DEFAULT '',
    decide_time timestamptz,
    close_time timestamptz,
    -- What the case grants, as coverage sees it: who holds it, for which act, with the Ordre's visa, and the
    -- first and last civil day it is (or was) in force; NULL: in force on no day.
    holder text,
    holding_act_type text NOT NULL DEFAULT '',
    holding_visa boolean NOT NULL DEFAULT false,
    holding_from date,
    holding_until date,
    -- Entries of the timeline so far (workflow events and views): the next one's position.
    event_count integer NOT NULL DEFAULT 0,
    create_time timestamptz NOT NULL,
    update_time timestamptz NOT NULL,
    CONSTRAINT cases_pkey PRIMARY KEY (case_id),
    CONSTRAINT cases_request_id_key UNIQUE (request_id),
    CONSTRAINT cases_workflow_id_key UNIQUE (workflow_id),
    CONSTRAINT cases_kind_known CHECK (kind IN (
        'ARS_CONTRACT', 'OPERATOR_DECLARATION', 'INTERMEDIARY_CONTRACT_REVIEW', 'AGREMENT_APPLICATION'
    )),
    CONSTRAINT cases_state_known CHECK (
        (kind = 'ARS_CONTRACT' AND state IN (
            'DRAFT', 'SUBMITTED', 'AWAITING_DOCUMENTS', 'AWAITING_VISA', 'UNDER_REVIEW', 'CHANGES_REQUESTED',
            'AWAITING_SIGNATURE', 'ACTIVE', 'REJECTED', 'VISA_REFUSED', 'WITHDRAWN', 'EXPIRED', 'TERMINATED'))
        OR (kind = 'OPERATOR_DECLARATION' AND state IN (
            'DECLARED', 'AWAITING_DOCUMENTS', 'ACKNOWLEDGED', 'EFFECTIVE', 'REJECTED', 'WITHDRAWN', 'LAPSED'))
        OR (kind = 'INTERMEDIARY_CONTRACT_REVIEW' AND state IN (
            'UNDER_REVIEW', 'CHANGES_REQUESTED', 'VISA_GIVEN', 'VISA_REFUSED', 'WITHDRAWN'))
        OR (kind = 'AGREMENT_APPLICATION' AND state IN (
            'FILED', 'AWAITING_DOCUMENTS', 'GRANTED', 'GRANTED_BY_SILENCE', 'REFUSED', 'WITHDRAWN', 'EXPIRED'))
    ),
    -- An agrément is the ministers' (national): no region.
    CONSTRAINT cases_region_format CHECK (
        region ~ '^[0-9]{2}$' OR (kind = 'AGREMENT_APPLICATION' AND region = '')
    ),
    CONSTRAINT cases_version_positive CHECK (version >= 0),
    -- A step is claimed only while it is open; a closed case has no step.
    CONSTRAINT cases_claim_needs_step CHECK (claimant = '' OR step <> ''),
    CONSTRAINT cases_closed_without_step CHECK (NOT closed OR step = ''),
    CONSTRAINT cases_holding_period CHECK (
        holding_from IS NULL OR (holder IS NOT NULL AND holding_until IS NOT NULL AND holding_from <= holding_until)
    )
);
CREATE INDEX cases_region_idx ON contracts.cases (region, closed, update_time DESC);
CREATE INDEX cases_promoter_idx ON contracts.cases (promoter);
CREATE INDEX cases_filer_idx ON contracts.cases (filer);
CREATE INDEX cases_ordre_idx ON contracts.cases (ordre_territory) WHERE ordre_territory <> '';
CREATE INDEX cases_holder_idx ON contracts.cases (holder, region) WHERE holding_from IS NOT NULL;

-- The timeline: the workflow's events (keyed by its sequence, so a retried write adds none twice) and the
-- views the service records, numbered together in the order they were written.
CREATE TABLE contracts.events (
    case_id uuid NOT NULL,
    position integer NOT NULL,
    workflow_sequence integer,
    kind text NOT NULL,
    actor text NOT NULL,
    step text NOT NULL DEFAULT '',
    detail text NOT NULL DEFAULT '',
    items text[] NOT NULL DEFAULT '{}',
    event_time timestamptz NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (case_id, position),
    CONSTRAINT events_case_fkey FOREIGN KEY (case_id) REFERENCES contracts.cases (case_id),
    CONSTRAINT events_position_positive CHECK (position >= 1),
    CONSTRAINT events_view_is_the_service_s CHECK ((kind = 'VIEWED') = (workflow_sequence IS NULL))
);
CREATE UNIQUE INDEX events_workflow_sequence_key ON contracts.events (case_id, workflow_sequence)
    WHERE workflow_sequence IS NOT NULL;

-- Messages between the promoter and the instructing staff; internal comments of the staff.
CREATE TABLE contracts.messages (
    case_id uuid NOT NULL,
    sequence integer NOT NULL,
    author text NOT NULL,
    from_promoter boolean NOT NULL,
    text text NOT NULL,
    items text[] NOT NULL DEFAULT '{}',
    request_id uuid,
    create_time timestamptz NOT NULL,
    CONSTRAINT messages_pkey PRIMARY KEY (case_id, sequence),
    CONSTRAINT messages_case_fkey FOREIGN KEY (case_id) REFERENCES contracts.cases (case_id)
);
CREATE UNIQUE INDEX messages_request_id_key ON contracts.messages (request_id) WHERE request_id IS NOT NULL;

CREATE TABLE contracts.comments (
    case_id uuid NOT NULL,
    sequence integer NOT NULL,
    author text NOT NULL,
    text text NOT NULL,
    request_id uuid,
    create_time timestamptz NOT NULL,
    CONSTRAINT comments_pkey PRIMARY KEY (case_id, sequence),
    CONSTRAINT comments_case_fkey FOREIGN KEY (case_id) REFERENCES contracts.cases (case_id)
);
CREATE UNIQUE INDEX comments_request_id_key ON contracts.comments (request_id) WHERE request_id IS NOT NULL;

-- Opinions (avis): state from the workflow, texts as written; an opinion given is never changed again.
CREATE TABLE contracts.opinions (
    case_id uuid NOT NULL,
    opinion_id uuid NOT NULL,
    state text NOT NULL,
    expert text NOT NULL,
    requester text NOT NULL,
    question text NOT NULL DEFAULT '',
    due_time timestamptz NOT NULL,
    reminded boolean NOT NULL DEFAULT false,
    verdict text NOT NULL DEFAULT '',
    answer text NOT NULL DEFAULT '',
    revocation_reason text NOT NULL DEFAULT '',
    request_time timestamptz NOT NULL,
    answer_time timestamptz,
    CONSTRAINT opinions_pkey PRIMARY KEY (case_id, opinion_id),
    CONSTRAINT opinions_case_fkey FOREIGN KEY (case_id) REFERENCES contracts.cases (case_id),
    CONSTRAINT opinions_state_known CHECK (state IN ('REQUESTED', 'GIVEN', 'REVOKED')),
    CONSTRAINT opinions_given_has_verdict CHECK ((state = 'GIVEN') = (verdict <> ''))
);
CREATE INDEX opinions_expert_idx ON contracts.opinions (expert);

-- Documents' bytes, content-addressed, behind the service's DocumentStore (an object store can take over).
CREATE TABLE contracts.document_blobs (
    sha256 text NOT NULL,
    content bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT document_blobs_pkey PRIMARY KEY (sha256),
    CONSTRAINT document_blobs_sha256_format CHECK (sha256 ~ '^[0-9a-f]{64}$')
);

-- Versions of a case's documents (metadata; the bytes are in the document store under their digest).
CREATE TABLE contracts.documents (
    case_id uuid NOT NULL,
    document_id text NOT NULL,
    version integer NOT NULL,
    document_type text NOT NULL,
    title text NOT NULL,
    media_type text NOT NULL,
    size_bytes bigint NOT NULL,
    sha256 text NOT NULL,
    uploader text NOT NULL,
    request_id uuid,
    create_time timestamptz NOT NULL,
    CONSTRAINT documents_pkey PRIMARY KEY (case_id, document_id, version),
    CONSTRAINT documents_case_fkey FOREIGN KEY (case_id) REFERENCES contracts.cases (case_id),
    CONSTRAINT documents_version_positive CHECK (version >= 1),
    CONSTRAINT documents_media_type_known CHECK (media_type IN ('application/pdf', 'image/png', 'image/jpeg')),
    CONSTRAINT documents_size_positive CHECK (size_bytes > 0)
);
CREATE UNIQUE INDEX documents_request_id_key ON contracts.documents (request_id) WHERE request_id IS NOT NULL;

-- Decision documents: the preview rendered once, then exactly those bytes signed (PAdES).
CREATE TABLE contracts.decisions (
    decision_id uuid NOT NULL,
    case_id uuid NOT NULL,
    kind text NOT NULL,
    reference text NOT NULL,
    -- The step it was previewed at: a signature takes the preview of the step it signs.
    step text NOT NULL DEFAULT '',
    motivation text NOT NULL DEFAULT '',
    preview_sha256 text NOT NULL,
    signed_sha256 text,
    signer text NOT NULL DEFAULT '',
    sign_time timestamptz,
    creator text NOT NULL,
    request_id uuid NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT decisions_pkey PRIMARY KEY (decision_id),
    CONSTRAINT decisions_case_fkey FOREIGN KEY (case_id) REFERENCES contracts.cases (case_id),
    CONSTRAINT decisions_reference_key UNIQUE (reference),
    CONSTRAINT decisions_request_id_key UNIQUE (request_id),
    CONSTRAINT decisions_signed_whole CHECK ((signed_sha256 IS NULL) = (sign_time IS NULL))
);
CREATE INDEX decisions_case_idx ON contracts.decisions (case_id, create_time DESC);

-- Decision numbers (`ARS84-2026-000123`): one counter per prefix and year.
CREATE TABLE contracts.decision_counters (
    prefix text NOT NULL,
    year integer NOT NULL,
    last integer NOT NULL,
    CONSTRAINT decision_counters_pkey PRIMARY KEY (prefix, year)
);

-- Who was told of what (the notifications the console and mail relays read): a person, or a role of the
-- case's scope; one row per (event, recipient), so a retried write tells nobody twice.
CREATE TABLE contracts.notifications (
    notification_id bigint GENERATED ALWAYS AS IDENTITY,
    case_id uuid NOT NULL,
    event_sequence integer NOT NULL,
    recipient text NOT NULL DEFAULT '',
    role text NOT NULL DEFAULT '',
    kind text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT notifications_pkey PRIMARY KEY (notification_id),
    CONSTRAINT notifications_case_fkey FOREIGN KEY (case_id) REFERENCES contracts.cases (case_id),
    CONSTRAINT notifications_event_recipient_key UNIQUE (case_id, event_sequence, recipient, role),
    CONSTRAINT notifications_someone CHECK ((recipient = '') <> (role = ''))
);
CREATE INDEX notifications_recipient_idx ON contracts.notifications (recipient, notification_id)
    WHERE recipient <> '';

-- The instructing staff as their last call named them (roles and scope from their token): whom a supervisor
-- may give a step to.
CREATE TABLE contracts.staff (
    staff text NOT NULL,
    roles text[] NOT NULL,
    region text NOT NULL DEFAULT '',
    territory text NOT NULL DEFAULT '',
    seen_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT staff_pkey PRIMARY KEY (staff)
);

-- Reusable motivations of a region's officers.
CREATE TABLE contracts.motivation_templates (
    template_id uuid NOT NULL,
    region text NOT NULL,
    title text NOT NULL,
    text text NOT NULL,
    kinds text[] NOT NULL DEFAULT '{}',
    creator text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT motivation_templates_pkey PRIMARY KEY (template_id),
    CONSTRAINT motivation_templates_region_title_key UNIQUE (region, title),
    CONSTRAINT motivation_templates_region_format CHECK (region ~ '^[0-9]{2}$')
);
