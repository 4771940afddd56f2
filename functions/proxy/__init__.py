"""The ``openai`` function: a call's flow (``app``: read, check, hold, forward, settle,
reply), the upstream HTTP client (``upstream``), the stream relay (``streaming``) and
what happens around a call (``hooks``: response cache, rate-limit headers, alerts).

May import: ``functions.core``, ``functions.store``, ``functions.httpio``, Flask, urllib3.
Never ``functions.admin`` or ``functions.log``.
"""
