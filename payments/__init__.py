"""The governed Payment: lifecycle, tenders, refunds, voids, approvals; staff portal and patient API."""
