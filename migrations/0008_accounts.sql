-- Accounts a team can run on the internet: admins, deactivation, display names, invites, and
-- the devices (tokens) a user can see and revoke (issue 20).

ALTER TABLE users
    ADD COLUMN is_admin       boolean NOT NULL DEFAULT false,
    -- Set while the user is deactivated: no token, no login; messages and memberships stay.
    ADD COLUMN deactivated_at timestamptz,
    ADD COLUMN display_name   text CHECK (char_length(display_name) BETWEEN 1 AND 64);

-- Invite tokens, stored as SHA-256 like bearer tokens. A registration takes one use in the
-- same transaction that creates the user (a row lock on the invite: two registrations racing
-- for the last use cannot both get it); `uses <= max_uses` holds whatever the code does.
CREATE TABLE invites (
    id          bigserial PRIMARY KEY,
    token_hash  bytea NOT NULL UNIQUE,
    created_by  bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    max_uses    integer NOT NULL CHECK (max_uses BETWEEN 1 AND 1000),
    uses        integer NOT NULL DEFAULT 0 CHECK (uses BETWEEN 0 AND max_uses),
    revoked_at  timestamptz,
    note        text NOT NULL DEFAULT ''
);

-- Which invite a user registered with (kept when the invite row is gone).
ALTER TABLE users ADD COLUMN invite_id bigint REFERENCES invites (id) ON DELETE SET NULL;

-- Devices: a public id for each token (the hash is never shown), when it was last used (to
-- within a minute), and what logged in: the user agent and the client address nginx passed.
ALTER TABLE tokens
    ADD COLUMN id           bigserial UNIQUE,
    ADD COLUMN last_used_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN user_agent   text NOT NULL DEFAULT '',
    ADD COLUMN address      text NOT NULL DEFAULT '';
UPDATE tokens SET last_used_at = created_at;

-- The admins' rows, locked together by every change of who is an active admin.
CREATE INDEX users_active_admins ON users (id) WHERE is_admin AND deactivated_at IS NULL;
