"""A handler module that fails while it is imported, as a module with a bug would."""

raise RuntimeError("this module is broken on purpose")
