"""One module per CLI command; each exposes `command` (or `app` for a group)."""
