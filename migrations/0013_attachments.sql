-- Attachments: files uploaded over HTTP and sent in messages (docs/protocol.md §12, design in
-- docs/operations.md "Attachments").
--
-- The bytes live in Postgres, in chunks of 256 KiB: every app host already reaches it, a file
-- is linked to its message in the send's own transaction and deleted with it in one, and
-- pg_dump (the backup) holds messages and files in one consistent snapshot.
CREATE TABLE files (
    id           bigserial PRIMARY KEY,
    -- Random (256 bits): the name nginx fetches the bytes by after chatd authorized the
    -- download (X-Accel-Redirect); never shown to clients.
    storage_key  text NOT NULL UNIQUE,
    uploader_id  bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL,
    content_type text NOT NULL,  -- sniffed from the bytes, never taken from the name
    size         bigint NOT NULL CHECK (size >= 0),
    width        integer,        -- images only
    height       integer,
    thumb_type   text,           -- the thumbnail's type when there is one
    thumb_size   bigint,
    thumb_width  integer,
    thumb_height integer,
    -- Set when a message first carries the file; files never sent are deleted after
    -- CHATD_UPLOAD_UNSENT_TTL_S (storage/files.py).
    sent_at      timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX files_unsent ON files (created_at) WHERE sent_at IS NULL;

-- part 0: the file; part 1: its thumbnail.
CREATE TABLE file_chunks (
    file_id bigint NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    part    smallint NOT NULL CHECK (part IN (0, 1)),
    n       integer NOT NULL,
    data    bytea NOT NULL,
    PRIMARY KEY (file_id, part, n)
);

-- Which messages carry which files, in order. A file is only ever sent by its uploader.
CREATE TABLE message_files (
    message_id bigint NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    position   smallint NOT NULL,
    file_id    bigint NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    PRIMARY KEY (message_id, position)
);
CREATE INDEX message_files_file ON message_files (file_id);

-- What a message's frame shows of its files (name, size, type, dimensions), written with the
-- link in the send's transaction: history and catch-up read it with the row, no join.
ALTER TABLE messages ADD COLUMN attachments jsonb;

-- Deleting messages deletes their files, unless another message still carries them; the
-- caller runs it in the transaction that deletes (or blanks) the messages.
CREATE FUNCTION chatd_delete_message_files(p_message_ids bigint[])
RETURNS SETOF bigint LANGUAGE sql VOLATILE AS $$
    WITH unlinked AS (
        DELETE FROM message_files WHERE message_id = ANY (p_message_ids) RETURNING file_id
    )
    DELETE FROM files f
    WHERE f.id IN (SELECT file_id FROM unlinked)
      AND NOT EXISTS (
          SELECT 1 FROM message_files mf
          WHERE mf.file_id = f.id AND NOT (mf.message_id = ANY (p_message_ids))
      )
    RETURNING f.id;
$$;
