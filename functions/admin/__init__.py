"""The ``admin`` function: routing and who may call what (``app``), the handlers
(``handlers``, ``members``, ``topups``, ``reconciliation``; answers in ``responses``), the
console's static files (``console``), Cloud Scheduler's ID tokens (``oidc``), and the
clients of OpenAI's own APIs it needs: a key's validation (``external_keys``) and the
Usage and Costs APIs (``usage_api``) that a reconciliation run reads (``reconcile_run``).

May import: ``functions.core``, ``functions.store``, ``functions.httpio``, Flask,
requests. Never ``functions.proxy`` or ``functions.log``.
"""
