"""GoCardless subscription payment status records: visibility only, never collection (§3.3, §3.4)."""
