"""§3.4: no code path in this app can initiate, schedule or retry a Direct Debit collection."""

from __future__ import annotations

import re
from pathlib import Path

import subscriptions

PACKAGE = Path(subscriptions.__file__).resolve().parent


def _sources() -> dict[str, str]:
    return {p.name: p.read_text() for p in PACKAGE.glob("*.py")}


def test_only_the_read_only_client_talks_to_gocardless():
    users = sorted(name for name, text in _sources().items() if re.search(r"\bhttpx\b", text))

    assert users == ["client.py"]


def test_no_module_sends_anything_but_a_get_to_gocardless():
    verbs = re.compile(r"\.(post|put|patch|delete)\(|method=\"(POST|PUT|PATCH|DELETE)\"")

    offenders = {name for name, text in _sources().items() if verbs.search(text)}

    assert offenders == set()


def test_nothing_refers_to_gocardless_write_endpoints():
    # The API paths GoCardless uses to create or act on collections.
    writes = re.compile(r"/(subscriptions|payments|mandates|instalment_schedules)/[^\"']*actions/")
    creates = re.compile(r"\"/(payments|subscriptions|instalment_schedules|mandates)\"")

    offenders = {
        name for name, text in _sources().items() if writes.search(text) or creates.search(text)
    }

    assert offenders == set()
