"""The ``log`` function: a member's page (``web/``) and its JSON API (``app``); who calls
and what their key lets them see (``viewer``).

May import: ``functions.core``, ``functions.store``, ``functions.httpio``, Flask. Never
``functions.proxy`` or ``functions.admin``.
"""
