-- Group commit, unchanged but for the order in which rows are inserted: by (sender,
-- client_msg_id), the key of the dedupe index.
--
-- Two batches can hold the same fresh key (one user sending it to two conversations from two
-- workers at once): the second to insert it waits on the unique index until the first
-- commits, then fails, and the caller runs its batch again (storage/messages.py). Inserted in
-- key order, two batches that share several keys always meet at the lowest one first, so one
-- waits for the other instead of each waiting for the other (a deadlock, found only after
-- deadlock_timeout while both held their conversations' row locks). The seqs are still
-- assigned in the batch's own order.
CREATE OR REPLACE FUNCTION chatd_append_many(p_cids bigint[], p_senders bigint[], p_cmids text[], p_bodies text[])
RETURNS SETOF messages LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM conversations WHERE id = ANY (p_cids) ORDER BY id FOR UPDATE;
    RETURN QUERY
    WITH input AS (
        SELECT * FROM unnest(p_cids, p_senders, p_cmids, p_bodies)
            WITH ORDINALITY AS i (cid, sender, cmid, body, ord)
    ), ok AS (
        SELECT i.* FROM input i
        WHERE EXISTS (SELECT 1 FROM members m WHERE m.conversation_id = i.cid AND m.user_id = i.sender)
          AND NOT EXISTS (SELECT 1 FROM messages x WHERE x.sender_id = i.sender AND x.client_msg_id = i.cmid)
    ), counts AS (
        SELECT ok.cid, count(*) AS n FROM ok GROUP BY ok.cid
    ), bumped AS (
        UPDATE conversations c SET last_seq = c.last_seq + counts.n
        FROM counts WHERE c.id = counts.cid
        RETURNING c.id, c.last_seq - counts.n AS base
    ), numbered AS (
        SELECT ok.cid, b.base + row_number() OVER (PARTITION BY ok.cid ORDER BY ok.ord) AS seq,
               ok.sender, ok.cmid, ok.body
        FROM ok JOIN bumped b ON b.id = ok.cid
    )
    INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, kind, body)
    SELECT cid, seq, sender, cmid, 'text', body FROM numbered ORDER BY sender, cmid
    RETURNING *;
END
$$;
