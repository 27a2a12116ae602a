"""Reconnecting the app's own database connection with other settings, for a while."""

from __future__ import annotations

from contextlib import contextmanager

from django.db import connection


@contextmanager
def reconnected(**settings):
    """The default connection closed and reopened with `settings` (USER, PORT, ...), then restored.

    What the application does runs unchanged, only against another role or an
    address where nothing answers. Use it outside any transaction (transactional
    tests): the connection is closed on the way in and out.
    """
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(settings)
    try:
        yield connection
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
