"""The API server: the registry of kinds, admission, and the one write path."""
