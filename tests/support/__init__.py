"""Helper modules of the tests: handlers, factories, fixtures, the atpd launcher, settings."""
