-- Family A's management: a server's settings (the vendor's Server model, one JSON document),
-- roles made for an API key (with the description the key was made with, and the role that
-- made it) or for a user.

ALTER TABLE server ADD COLUMN config TEXT NOT NULL DEFAULT '{}';
ALTER TABLE role ADD COLUMN description TEXT;
ALTER TABLE role ADD COLUMN created_by TEXT;
ALTER TABLE role ADD COLUMN user_id TEXT REFERENCES person (user_id) ON DELETE CASCADE;

CREATE UNIQUE INDEX role_user ON role (user_id);
CREATE INDEX role_created_by ON role (created_by);
