"""CLI commands, one module per stage or tool; each exposes ``command``."""
