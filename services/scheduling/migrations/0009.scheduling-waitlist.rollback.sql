DELETE FROM scheduling.notifications WHERE kind = 'KIND_WAITLIST_OFFER';
ALTER TABLE scheduling.notifications DROP CONSTRAINT notifications_kind_known;
ALTER TABLE scheduling.notifications ADD CONSTRAINT notifications_kind_known
    CHECK (kind IN ('KIND_REMINDER', 'KIND_JOIN_LINK', 'KIND_REPORT'));
DROP TABLE scheduling.waitlist_offers;
DROP TABLE scheduling.waitlist_entries;
