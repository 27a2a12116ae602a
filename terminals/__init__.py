"""Registered card terminals (countertop and handheld) per site, and their sessions."""
