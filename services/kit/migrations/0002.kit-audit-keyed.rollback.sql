DROP FUNCTION audit.append_events(text, audit.event_input[]);
DROP FUNCTION audit.lock_chain(text);
DROP TYPE audit.event_input;
ALTER TABLE audit.events DROP CONSTRAINT events_key_id_format;
ALTER TABLE audit.events DROP COLUMN key_id;
