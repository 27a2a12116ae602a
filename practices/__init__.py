"""Tenancy and people: practice groups, practices, sites, staff, patients.

A top-level app of its own (the design map puts practices under terminals/)
because every other app scopes its rows by these, while terminals are only one
kind of thing a site owns; keeping tenancy apart avoids every app depending on
terminal hardware.
"""
