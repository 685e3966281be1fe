-- Read receipts: durable read pointers (the hot copy lives in Redis and is flushed here in
-- batches), the per-user privacy setting, and a maintained member count for "read by K of N".

ALTER TABLE users ADD COLUMN share_read_state boolean NOT NULL DEFAULT true;

ALTER TABLE conversations ADD COLUMN member_count integer NOT NULL DEFAULT 0;
UPDATE conversations c SET member_count = (SELECT count(*) FROM members m WHERE m.conversation_id = c.id);

CREATE TABLE read_pointers (
    conversation_id bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    last_read_seq   bigint NOT NULL CHECK (last_read_seq >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX read_pointers_user_id ON read_pointers (user_id);
