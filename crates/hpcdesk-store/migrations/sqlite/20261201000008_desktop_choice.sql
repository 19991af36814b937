-- The desktop a session was created with (a name of launcher.desktops; '' for the agent's own
-- choice and for older sessions).
ALTER TABLE sessions ADD COLUMN desktop TEXT NOT NULL DEFAULT '';
