"""Firestore and Secret Manager, behind narrow classes: the proxy's configuration reads
and the client (``client``), the budget path that alone writes money - holds, counters,
escrow grants, usage records, the sweep (``ledger``, ``books``, ``grant_desk``, ``grants``,
``sweep``) -, the queries and their declared indexes (``indexes``, ``reports``,
``report_filters``, ``report_groups``, ``burn``), what the pages and reports read
(``views``), atomic configuration writes with their audit record (``writer``,
``provision``, ``membership``, ``topups``, ``price_loader``), reconciliation's reads and
writes (``reconciliations``), recording and posting budget alerts (``alerts``) and
secrets (``secrets``). Nothing outside this package talks to Firestore.

May import: ``functions.core``, the Google Cloud libraries, requests (alert webhooks).
Never ``functions.proxy``, ``functions.admin`` or ``functions.log``.
"""
