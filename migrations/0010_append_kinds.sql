-- Group commit, unchanged but for the kind of each row: a parameter, like the body, instead
-- of 'text' written into the function. Message kinds are declared once, in the code
-- (chatd/storage/records.py, `Kind`); the CHECK constraint on messages.kind lists the same
-- names. (chatd_append, the single send of 0006, is no longer called by chatd.)
DROP FUNCTION chatd_append_many(bigint[], bigint[], text[], text[]);

CREATE FUNCTION chatd_append_many(
    p_cids bigint[], p_senders bigint[], p_cmids text[], p_bodies text[], p_kinds text[]
)
RETURNS SETOF messages LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM conversations WHERE id = ANY (p_cids) ORDER BY id FOR UPDATE;
    RETURN QUERY
    WITH input AS (
        SELECT * FROM unnest(p_cids, p_senders, p_cmids, p_bodies, p_kinds)
            WITH ORDINALITY AS i (cid, sender, cmid, body, kind, ord)
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
               ok.sender, ok.cmid, ok.kind, ok.body
        FROM ok JOIN bumped b ON b.id = ok.cid
    )
    INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, kind, body)
    SELECT cid, seq, sender, cmid, kind, body FROM numbered ORDER BY sender, cmid
    RETURNING *;
END
$$;
