-- The console's own data: its sessions, the officers' saved views and notification preferences, in-app
-- notifications and background export files. No business data: cases live in the contracts service.
-- Officers are named by their delegate subject (`staff:<id>`), never by name.

CREATE SCHEMA console;

CREATE TABLE console.sessions (
    -- SHA-256 of the cookie's random value: a database reader cannot replay a session.
    id_hash bytea NOT NULL,
    -- `staff:<id>` once signed in; NULL while the login is under way.
    subject text,
    -- What the console knows of the signed-in officer and of the login under way (state, PKCE verifier).
    data jsonb NOT NULL DEFAULT '{}',
    create_time timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now(),
    expire_time timestamptz NOT NULL,
    CONSTRAINT sessions_pkey PRIMARY KEY (id_hash),
    CONSTRAINT sessions_id_hash_length CHECK (length(id_hash) = 32),
    CONSTRAINT sessions_subject_format CHECK (subject IS NULL OR subject ~ '^staff:[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$')
);
CREATE INDEX sessions_expire_time_idx ON console.sessions (expire_time);

-- Named inbox filters: personal, or shared with the officer's team (same region, or Ordre territory).
CREATE TABLE console.saved_views (
    view_id uuid NOT NULL,
    owner text NOT NULL,
    -- `regions/84` or `territories/42`: the team it is shared with ('' when personal).
    team text NOT NULL DEFAULT '',
    title text NOT NULL,
    -- The inbox query string (tab, filters, sort).
    query text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT saved_views_pkey PRIMARY KEY (view_id),
    CONSTRAINT saved_views_title_length CHECK (length(title) BETWEEN 1 AND 100),
    CONSTRAINT saved_views_query_length CHECK (length(query) <= 2000),
    CONSTRAINT saved_views_team_format CHECK (team = '' OR team ~ '^(regions/[0-9]{2}|territories/([0-9]{2}|2A|2B|97[1-6]|FR))$'),
    CONSTRAINT saved_views_owner_title_key UNIQUE (owner, title)
);
CREATE INDEX saved_views_team_idx ON console.saved_views (team) WHERE team <> '';

-- Per event kind, how an officer wants to hear of it.
CREATE TABLE console.notification_preferences (
    owner text NOT NULL,
    event text NOT NULL,
    in_app boolean NOT NULL DEFAULT true,
    email boolean NOT NULL DEFAULT false,
    CONSTRAINT notification_preferences_pkey PRIMARY KEY (owner, event),
    CONSTRAINT notification_preferences_event_known CHECK (event IN (
        'case_assigned', 'step_overdue', 'step_due_soon', 'opinion_given', 'message_received', 'export_ready',
        'daily_digest'
    ))
);

CREATE TABLE console.notifications (
    notification_id uuid NOT NULL,
    owner text NOT NULL,
    event text NOT NULL,
    -- A short French sentence with no patient data, and where it leads.
    text text NOT NULL,
    link text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    read_time timestamptz,
    -- One digest per officer and day: the job may run twice without writing twice.
    dedup_key text,
    CONSTRAINT notifications_pkey PRIMARY KEY (notification_id),
    CONSTRAINT notifications_text_length CHECK (length(text) BETWEEN 1 AND 500),
    CONSTRAINT notifications_owner_dedup_key UNIQUE (owner, dedup_key)
);
CREATE INDEX notifications_owner_idx ON console.notifications (owner, create_time DESC);

-- Exports of a filtered inbox, produced in the background.
CREATE TABLE console.exports (
    export_id uuid NOT NULL,
    owner text NOT NULL,
    -- Who asked (roles, region, territory): the export reads the cases as them, never as the console.
    officer jsonb NOT NULL,
    format text NOT NULL,
    query text NOT NULL,
    state text NOT NULL DEFAULT 'PENDING',
    row_count integer,
    content bytea,
    filename text,
    error text,
    create_time timestamptz NOT NULL DEFAULT now(),
    finish_time timestamptz,
    expire_time timestamptz NOT NULL,
    CONSTRAINT exports_pkey PRIMARY KEY (export_id),
    CONSTRAINT exports_format_known CHECK (format IN ('csv', 'xlsx')),
    CONSTRAINT exports_state_known CHECK (state IN ('PENDING', 'RUNNING', 'DONE', 'FAILED')),
    CONSTRAINT exports_done_has_content CHECK (state <> 'DONE' OR (content IS NOT NULL AND filename IS NOT NULL))
);
CREATE INDEX exports_owner_idx ON console.exports (owner, create_time DESC);
CREATE INDEX exports_pending_idx ON console.exports (create_time) WHERE state IN ('PENDING', 'RUNNING');
