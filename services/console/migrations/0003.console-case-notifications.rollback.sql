DELETE FROM console.notification_preferences WHERE event = 'case_changed';
ALTER TABLE console.notification_preferences DROP CONSTRAINT notification_preferences_event_known;
ALTER TABLE console.notification_preferences ADD CONSTRAINT notification_preferences_event_known CHECK (event IN (
    'case_assigned', 'step_overdue', 'step_due_soon', 'opinion_given', 'message_received', 'export_ready',
    'daily_digest'
));
DROP TABLE console.notification_mails;
DROP TABLE console.notification_cursors;
