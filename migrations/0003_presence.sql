-- Presence: live state is in Redis; the time a user was last seen online is kept here.
ALTER TABLE users ADD COLUMN last_seen timestamptz;
