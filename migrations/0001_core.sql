-- chatd core schema: users, bearer tokens, conversations, members, messages.

CREATE TABLE users (
    id            bigserial PRIMARY KEY,
    username      text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Only the SHA-256 of a token is stored; logging out deletes the row.
CREATE TABLE tokens (
    token_hash bytea PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tokens_user_id ON tokens (user_id);

-- last_seq is the per-conversation sequence: every event takes last_seq + 1 under the row
-- lock, in the same statement or transaction that stores it, so seqs are gapless.
CREATE TABLE conversations (
    id         bigserial PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('direct', 'group')),
    title      text,
    created_by bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_seq   bigint NOT NULL DEFAULT 0,
    direct_lo  bigint,
    direct_hi  bigint,
    CHECK ((kind = 'direct') = (direct_lo IS NOT NULL AND direct_hi IS NOT NULL)),
    CHECK (direct_lo IS NULL OR direct_lo < direct_hi)
);
CREATE UNIQUE INDEX conversations_direct_pair ON conversations (direct_lo, direct_hi)
    WHERE kind = 'direct';

CREATE TABLE members (
    conversation_id bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role            text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'member')),
    joined_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX members_user_id ON members (user_id, conversation_id);

-- The conversation timeline: user messages (kind 'text') and membership events, one seq each.
CREATE TABLE messages (
    id              bigserial UNIQUE,
    conversation_id bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             bigint NOT NULL,
    sender_id       bigint REFERENCES users (id) ON DELETE SET NULL,
    client_msg_id   text,
    kind            text NOT NULL DEFAULT 'text'
                    CHECK (kind IN ('text', 'members_added', 'members_removed')),
    body            text NOT NULL DEFAULT '',
    user_ids        bigint[],
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, seq)
);
-- Durable dedupe of resends: one row per (sender, client_msg_id), whatever the worker.
CREATE UNIQUE INDEX messages_client_msg_id ON messages (sender_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
