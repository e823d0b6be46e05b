-- Family A's attributes: JSON values by name, per user (gone with the user) and per scope
-- (global, a server's, a server's privileged; server_id is '' for global).

CREATE TABLE user_attribute (
    user_id UUID NOT NULL REFERENCES person (user_id) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (user_id, name)
);

CREATE INDEX user_attribute_value ON user_attribute (name, value);

CREATE TABLE scope_attribute (
    scope     TEXT NOT NULL CHECK (scope IN ('global', 'server', 'privileged')),
    server_id TEXT NOT NULL,
    name      TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (scope, server_id, name)
);
