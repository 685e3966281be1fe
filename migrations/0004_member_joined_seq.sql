-- The seq a member joined at: unread counts start there, not at the conversation's beginning.
ALTER TABLE members ADD COLUMN joined_seq bigint NOT NULL DEFAULT 0;
