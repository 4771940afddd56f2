"""The ``tollgate`` command: a client of the admin API (docs/admin-api.md), installed
with ``pip install .`` on any machine with Python 3.11+. It is a package of its own
beside ``functions/`` and imports nothing from it, so the deployed functions do not
ship it and it needs none of their cloud dependencies (``requests`` only).

``cli`` parses the command line, ``commands`` holds one function per command,
``api`` the HTTP client and the table/field formatting."""
