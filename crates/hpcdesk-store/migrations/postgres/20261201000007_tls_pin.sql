-- A desktop reached over the network speaks TLS with a certificate of its own: the SHA-256
-- (hex) of it, which the gateway pins ('' for desktops on loopback and older ones).
ALTER TABLE sessions ADD COLUMN tls_pin TEXT NOT NULL DEFAULT '';
