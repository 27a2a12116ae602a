"""Security tests reuse the DNA simulator fixtures of the provider tests."""

from tests.providers.conftest import dna, http  # noqa: F401
