"""Portal tests reuse the DNA simulator fixtures of the provider tests."""

from tests.providers.conftest import dna, http, live, sim_terminal  # noqa: F401
