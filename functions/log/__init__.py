"""The ``log`` function: a member's page (``web/``) and its JSON API (``app``).

May import: ``functions.core``, ``functions.store``, ``functions.httpio``, Flask. Never
``functions.proxy`` or ``functions.admin``.
"""
