"""The ``docket`` command line: one module per command group, added by :mod:`.main`."""
