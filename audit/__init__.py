"""Append-only, hash-chained audit log (§8): record, verify, export."""
