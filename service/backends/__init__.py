"""Storage and queue backends other than the single-host default (SQLite and a local process pool).

Each backend implements the stores' protocols (:class:`~service.jobs.store.JobStore`,
:class:`~service.models.store.ModelStore`, :class:`~service.datasets.store.DatasetMetadata`) and knows nothing of
the HTTP layer: it raises the service's storage errors, which the API maps to status codes.
"""
