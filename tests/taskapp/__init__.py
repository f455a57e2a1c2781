"""A test app whose ``tasks`` module holds decorated tasks (found by autodiscovery)."""
