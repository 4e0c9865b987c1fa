-- The expertise service's own schema: téléexpertise requests (cases) as the service reads them.
--
-- The service writes a request when it is created (its content: question, context, attachments, which never
-- travel through Temporal); from then on the `Teleexpertise` workflow owns the request and every change is
-- written by the workflow's persist activity, in one transaction per change, guarded by `version` so that a
-- late retry of an older change never overwrites a newer one. States, event kinds and reasons are stored as
-- the API's enum names without their prefix.

CREATE SCHEMA expertise;

CREATE TABLE expertise.requests (
    case_id uuid NOT NULL,
    -- The client's idempotency key of the creation.
    request_id uuid NOT NULL,
    requester text NOT NULL,
    requester_establishment text NOT NULL,
    ght text,
    region text NOT NULL,
    patient uuid NOT NULL,
    patient_identity jsonb NOT NULL,
    specialty text NOT NULL,
    requested_expert text,
    question text NOT NULL,
    clinical_context text NOT NULL,
    urgency text NOT NULL,
    requested_answer_time timestamptz NOT NULL,
    -- What the workflow was (or will be) started with, so a retried creation can start it again.
    routing jsonb NOT NULL,
    timeline jsonb NOT NULL,
    workflow_id text NOT NULL,
    -- Written by the workflow from here on.
    state text NOT NULL DEFAULT 'REQUESTED',
    version bigint NOT NULL DEFAULT 0,
    answer_due_time timestamptz NOT NULL,
    deadline_paused boolean NOT NULL DEFAULT false,
    breached boolean NOT NULL DEFAULT false,
    breach_time timestamptz,
    escalation_level integer NOT NULL DEFAULT 0,
    reminders_sent integer NOT NULL DEFAULT 0,
    assigned_expert text,
    expert_establishment text,
    accept_time timestamptz,
    close_time timestamptz,
    close_reason text NOT NULL DEFAULT '',
    report jsonb,
    billing jsonb,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT requests_pkey PRIMARY KEY (case_id),
    CONSTRAINT requests_request_id_key UNIQUE (request_id),
    CONSTRAINT requests_workflow_id_key UNIQUE (workflow_id),
    CONSTRAINT requests_state_known CHECK (state IN (
        'REQUESTED', 'AWAITING_EXPERT', 'ACCEPTED', 'AWAITING_INFORMATION', 'IN_PROGRESS', 'COMPLETED',
        'CANCELLED', 'EXPIRED'
    )),
    CONSTRAINT requests_urgency_known CHECK (urgency IN ('ROUTINE', 'URGENT')),
    CONSTRAINT requests_requester_format CHECK (requester ~ '^[0-9]{11}$'),
    CONSTRAINT requests_assigned_expert_format CHECK (assigned_expert ~ '^[0-9]{11}$'),
    -- An expert holds exactly the cases in an assigned state (a completed case keeps its expert).
    CONSTRAINT requests_assignment_matches_state CHECK (
        (state IN ('ACCEPTED', 'AWAITING_INFORMATION', 'IN_PROGRESS', 'COMPLETED')) = (assigned_expert IS NOT NULL)
        OR state IN ('CANCELLED', 'EXPIRED')
    ),
    CONSTRAINT requests_report_when_completed CHECK ((state = 'COMPLETED') = (report IS NOT NULL)),
    CONSTRAINT requests_breach_time_when_breached CHECK (breached = (breach_time IS NOT NULL)),
    CONSTRAINT requests_version_positive CHECK (version >= 0)
);

CREATE INDEX requests_requester_idx ON expertise.requests (requester, create_time DESC, case_id DESC);
CREATE INDEX requests_assigned_expert_idx ON expertise.requests (assigned_expert, create_time DESC, case_id DESC)
    WHERE assigned_expert IS NOT NULL;

-- Experts a request was routed to. `active`: may accept now (the request is unassigned and they have not
-- declined); inactive rows are kept so that a late accept is told ALREADY_ASSIGNED rather than "not visible".
CREATE TABLE expertise.candidates (
    case_id uuid NOT NULL,
    rpps text NOT NULL,
    active boolean NOT NULL,
    CONSTRAINT candidates_pkey PRIMARY KEY (case_id, rpps),
    CONSTRAINT candidates_case_fkey FOREIGN KEY (case_id) REFERENCES expertise.requests (case_id),
    CONSTRAINT candidates_rpps_format CHECK (rpps ~ '^[0-9]{11}$')
);
CREATE INDEX candidates_active_rpps_idx ON expertise.candidates (rpps, case_id) WHERE active;

CREATE TABLE expertise.attachments (
    case_id uuid NOT NULL,
    attachment_id uuid NOT NULL,
    position integer NOT NULL,
    title text NOT NULL,
    media_type text NOT NULL,
    size_bytes bigint NOT NULL,
    sha256 text,
    content bytea,
    uri text,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT attachments_pkey PRIMARY KEY (case_id, attachment_id),
    CONSTRAINT attachments_case_fkey FOREIGN KEY (case_id) REFERENCES expertise.requests (case_id),
    CONSTRAINT attachments_position_key UNIQUE (case_id, position),
    -- Stored (content with its digest) or referenced (uri), never both.
    CONSTRAINT attachments_stored_or_referenced CHECK (
        (content IS NOT NULL AND sha256 IS NOT NULL AND uri IS NULL)
        OR (content IS NULL AND sha256 IS NULL AND uri IS NOT NULL)
    ),
    CONSTRAINT attachments_size_matches CHECK (content IS NULL OR octet_length(content) = size_bytes),
    CONSTRAINT attachments_size_positive CHECK (size_bytes >= 0)
);

-- The question/answer thread; the workflow numbers the messages.
CREATE TABLE expertise.messages (
    case_id uuid NOT NULL,
    sequence integer NOT NULL,
    author text NOT NULL,
    kind text NOT NULL,
    text text NOT NULL,
    create_time timestamptz NOT NULL,
    CONSTRAINT messages_pkey PRIMARY KEY (case_id, sequence),
    CONSTRAINT messages_case_fkey FOREIGN KEY (case_id) REFERENCES expertise.requests (case_id),
    CONSTRAINT messages_kind_known CHECK (kind IN ('QUESTION', 'ANSWER'))
);

-- The history of a request; the workflow numbers the events.
CREATE TABLE expertise.events (
    case_id uuid NOT NULL,
    sequence integer NOT NULL,
    kind text NOT NULL,
    actor text NOT NULL,
    detail text NOT NULL,
    event_time timestamptz NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (case_id, sequence),
    CONSTRAINT events_case_fkey FOREIGN KEY (case_id) REFERENCES expertise.requests (case_id)
);

-- Notifications to practitioners: one per (event, recipient), so a retried write adds none twice.
CREATE TABLE expertise.notifications (
    notification_id bigint GENERATED ALWAYS AS IDENTITY,
    case_id uuid NOT NULL,
    event_sequence integer NOT NULL,
    recipient text NOT NULL,
    kind text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT notifications_pkey PRIMARY KEY (notification_id),
    CONSTRAINT notifications_event_recipient_key UNIQUE (case_id, event_sequence, recipient),
    CONSTRAINT notifications_event_fkey FOREIGN KEY (case_id, event_sequence)
        REFERENCES expertise.events (case_id, sequence),
    CONSTRAINT notifications_recipient_format CHECK (recipient ~ '^[0-9]{11}$')
);
CREATE INDEX notifications_recipient_idx ON expertise.notifications (recipient, notification_id);

-- Client request ids already applied (creations, and changes written by the workflow with their change), so a
-- retry returns the request instead of applying again, and an id reused for another call is refused.
CREATE TABLE expertise.applied_requests (
    request_id uuid NOT NULL,
    case_id uuid NOT NULL,
    method text NOT NULL,
    actor text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT applied_requests_pkey PRIMARY KEY (request_id),
    CONSTRAINT applied_requests_case_fkey FOREIGN KEY (case_id) REFERENCES expertise.requests (case_id)
);
