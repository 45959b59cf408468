"""An app module that fails to import: the server must exit with an error, not loop."""

raise RuntimeError("this module is broken on purpose")
