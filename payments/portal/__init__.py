"""The staff portal (server-rendered, htmx for live parts): views translate requests into service calls."""
