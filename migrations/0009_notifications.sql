-- Notifications (issue 22): per-conversation mute, the user's do-not-disturb and push preview
-- choice, and the Web Push subscriptions of each device.

-- Muting is the member's own setting: leaving (or being removed) forgets it.
ALTER TABLE members ADD COLUMN muted boolean NOT NULL DEFAULT false;

-- No row: the defaults (notifications on, pushes without the message text).
CREATE TABLE notify_settings (
    user_id      bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    dnd          boolean NOT NULL DEFAULT false,
    push_preview boolean NOT NULL DEFAULT false
);

-- A browser's push subscription, tied to the token (device) that registered it: deleting the
-- token (logout, a revoked device, a password change, deactivation) deletes its subscriptions
-- in the same statement. One row per endpoint, whoever registered it last.
CREATE TABLE push_subscriptions (
    id         bigserial PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash bytea NOT NULL REFERENCES tokens (token_hash) ON DELETE CASCADE,
    endpoint   text NOT NULL UNIQUE CHECK (char_length(endpoint) <= 2048),
    p256dh     text NOT NULL,
    auth       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX push_subscriptions_user ON push_subscriptions (user_id, id);
CREATE INDEX push_subscriptions_token ON push_subscriptions (token_hash);
