"""Outbound HTTP: one TLS context per process, shared by every httpx client we open.

httpx builds a new `ssl.SSLContext` for each `httpx.Client` and loads the CA
bundle into it: about 10-15 ms of CPU every time. The outbox relay opens a
client per batch and the provider clients one per unit of work, so at tens of
payments a second that alone took a large share of a core. The context is made
once per process (the same CA choice httpx makes: SSL_CERT_FILE, then
SSL_CERT_DIR, then certifi) and handed to each client as `verify=`; every
client keeps its own connection pool and timeouts.
"""

from __future__ import annotations

import functools
import os
import ssl

import certifi


@functools.cache
def tls_context() -> ssl.SSLContext:
    """Certificate-verifying client context, built on first use in this process."""
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    return ssl.create_default_context(cafile=certifi.where())
