"""The shop app: orders whose follow-up work runs as ATP tasks."""
