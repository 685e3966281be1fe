-- Presence consent: a member has taken part in a conversation once they created or opened it,
-- added members to it, or sent a message in it. Presence is shared only through such
-- conversations (docs/protocol.md §4.9), not through any group someone else put you in.
ALTER TABLE members ADD COLUMN took_part boolean NOT NULL DEFAULT false;
UPDATE members m SET took_part = true
WHERE EXISTS (SELECT 1 FROM conversations c WHERE c.id = m.conversation_id AND c.created_by = m.user_id)
   OR EXISTS (SELECT 1 FROM messages x WHERE x.conversation_id = m.conversation_id AND x.sender_id = m.user_id);
