-- Search and delivery receipts (issue 21).
--
-- Search: the full-text index is an expression index on the message row's own `body`
-- (`to_tsvector(<CHATD_SEARCH_LANGUAGE>, body)`), built by `chatd migrate` for the configured
-- language (storage/search.py), not here: a language is a setting. Being on the row's content, an
-- entry changes or goes with the body itself (an edit, a deletion that clears it): there is no
-- second copy of the text to forget.
--
-- Former memberships: a member removed from (or leaving) a conversation may still search it up to
-- their removal, never past it. The trigger records the seq the conversation had reached when the
-- membership row went (the removal's own event comes after it).
CREATE TABLE member_history (
    conversation_id bigint NOT NULL,
    user_id         bigint NOT NULL,
    left_seq        bigint NOT NULL,
    PRIMARY KEY (user_id, conversation_id)
);

CREATE FUNCTION chatd_member_left() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO member_history (conversation_id, user_id, left_seq)
    SELECT OLD.conversation_id, OLD.user_id, c.last_seq FROM conversations c WHERE c.id = OLD.conversation_id
    ON CONFLICT (user_id, conversation_id) DO UPDATE
        SET left_seq = GREATEST(member_history.left_seq, EXCLUDED.left_seq);
    -- The delivery pointer goes with the membership, as the read pointer does (removal).
    DELETE FROM delivery_pointers WHERE conversation_id = OLD.conversation_id AND user_id = OLD.user_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER members_left AFTER DELETE ON members FOR EACH ROW EXECUTE FUNCTION chatd_member_left();

-- Delivery pointers: the highest seq any of a user's devices confirmed it received, per
-- conversation. Like read pointers, the hot copy is in Redis and reaches this table in batches.
CREATE TABLE delivery_pointers (
    conversation_id    bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id            bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    last_delivered_seq bigint NOT NULL CHECK (last_delivered_seq >= 0),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX delivery_pointers_user_id ON delivery_pointers (user_id);
