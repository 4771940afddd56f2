"""The ``admin`` function. ``app``: the routing table and who may call what (admin
tokens, a project lead's key, Cloud Scheduler's ID tokens via ``oidc``). ``resources``
wires one object per resource to the store classes it uses:

* ``users``, ``external_keys`` (also checks a key against OpenAI before storing it),
  ``models`` (and dated prices), ``projects`` (and the cache flush), ``alerts``;
* ``members``, ``keys``, ``topups`` (what a lead may do to whom: ``members.may_manage``),
  ``limits``;
* ``reports`` (usage, records, CSV, rate limits, audit), ``operations`` (sweep, whoami);
* ``reconciliation`` with its run (``reconcile_run``) and OpenAI's Usage and Costs API
  client (``usage_api``).

Answers are made JSON by ``responses``; the console's static files are ``console``'s.
No module here talks to Firestore: every read and write is a store class's.

May import: ``functions.core``, ``functions.store``, ``functions.httpio``, Flask,
requests. Never ``functions.proxy`` or ``functions.log``.
"""
