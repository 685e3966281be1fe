-- Sends: take the conversation row lock first, and check membership only once it is held.
--
-- A single statement is not enough in READ COMMITTED: a statement that waits for a row lock
-- re-checks only the locked row after the wait and keeps its old snapshot for everything else,
-- so a send queued behind a removal still saw the removed member and was stored after the
-- `members_removed` event. Each statement of a VOLATILE PL/pgSQL function takes a new
-- snapshot: the second statement below sees every membership change committed before the lock
-- was granted (add and remove take the same lock), at the cost of one round trip, as before.
--
-- Both run as one autocommit statement: a duplicate client_msg_id raises a unique violation
-- that undoes the seq increment too, so seqs stay gapless.

-- One send; no row when the sender is not a member (or the conversation does not exist).
CREATE FUNCTION chatd_append(p_cid bigint, p_sender bigint, p_cmid text, p_body text)
RETURNS SETOF messages LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM conversations WHERE id = p_cid FOR UPDATE;
    RETURN QUERY
    WITH next AS (
        UPDATE conversations SET last_seq = last_seq + 1
        WHERE id = p_cid
          AND EXISTS (SELECT 1 FROM members WHERE conversation_id = p_cid AND user_id = p_sender)
        RETURNING id, last_seq
    )
    INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, kind, body)
    SELECT id, last_seq, p_sender, p_cmid, 'text', p_body FROM next
    RETURNING *;
END
$$;

-- Group commit: many sends, any conversations. Sends that fail the membership or dedupe check
-- are left out (the caller retries them one by one for the exact error). Conversation rows are
-- locked in id order, so concurrent batches cannot deadlock.
CREATE FUNCTION chatd_append_many(p_cids bigint[], p_senders bigint[], p_cmids text[], p_bodies text[])
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
    )
    INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, kind, body)
    SELECT ok.cid, b.base + row_number() OVER (PARTITION BY ok.cid ORDER BY ok.ord),
           ok.sender, ok.cmid, 'text', ok.body
    FROM ok JOIN bumped b ON b.id = ok.cid
    RETURNING *;
END
$$;
