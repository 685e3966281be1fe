-- Edits and deletions (issue 21): each is an event of its own in the conversation's sequence
-- (kinds 'edit' and 'delete', declared in chatd/storage/records.py) that refers to the
-- original message by its seq (ref_seq). The original row holds the current version: an edit
-- rewrites its body and sets edited_at; a delete empties its body and sets deleted_at. An
-- edit or delete row stores no text of its own (it is shown with the original's current
-- body), so a deleted message's text is in no row at all.
ALTER TABLE messages DROP CONSTRAINT messages_kind_check;
ALTER TABLE messages ADD CONSTRAINT messages_kind_check
    CHECK (kind IN ('text', 'members_added', 'members_removed', 'edit', 'delete'));
ALTER TABLE messages
    ADD COLUMN ref_seq bigint,
    ADD COLUMN edited_at timestamptz,
    ADD COLUMN deleted_at timestamptz;
