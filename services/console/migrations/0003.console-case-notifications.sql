-- depends: 0002.console-roles
-- The officers' case notifications, taken from the contracts service (ListNotifications) by the console's
-- poller: where each officer's reading stands, and which e-mails went out (one per officer and notification,
-- whichever replica sends it). In-app notifications are console.notifications rows keyed the same way.

-- Per officer: the last contracts notification id taken, and since when the officer is told (their first
-- pass: what happened before they used the console is not replayed to them).
CREATE TABLE console.notification_cursors (
    owner text NOT NULL,
    last_notification_id bigint NOT NULL DEFAULT 0,
    since timestamptz NOT NULL,
    update_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT notification_cursors_pkey PRIMARY KEY (owner),
    CONSTRAINT notification_cursors_last_positive CHECK (last_notification_id >= 0)
);

-- An e-mail claimed before it is sent (the claim is dropped if sending fails, so a later pass retries).
CREATE TABLE console.notification_mails (
    owner text NOT NULL,
    dedup_key text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT notification_mails_pkey PRIMARY KEY (owner, dedup_key)
);

-- Events the contracts service tells of that no finer preference covers (a case activated, expired...).
ALTER TABLE console.notification_preferences DROP CONSTRAINT notification_preferences_event_known;
ALTER TABLE console.notification_preferences ADD CONSTRAINT notification_preferences_event_known CHECK (event IN (
    'case_assigned', 'step_overdue', 'step_due_soon', 'opinion_given', 'message_received', 'export_ready',
    'daily_digest', 'case_changed'
));
