"""The ``openai`` function: a call's flow (``app``: read, check, plan, hold), its way
out (``forward``: upstream, reply, settle), the upstream HTTP client (``upstream``),
the stream relay (``streaming``) and what happens around a call (``hooks``: response
cache, rate-limit headers, alerts). The hold's plan itself is ``core/plan.py``.

May import: ``functions.core``, ``functions.store``, ``functions.httpio``, Flask, urllib3.
Never ``functions.admin`` or ``functions.log``.
"""
