"""When the client tries a request again, and how long it waits first."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of answers the service marks as retryable: a status in ``statuses`` that carries ``Retry-After``.

    The service sends 503 + Retry-After when it did nothing with the request (its job queue is full, or its store
    refused the write), so even a POST is safe to send again; a 503 without it (a synchronous fit's worker died)
    is not retried. Each wait is the server's Retry-After or the exponential backoff ``backoff_s * 2**(n-1)``
    (with jitter), whichever is longer; a Retry-After over ``max_delay_s`` ends the retries at once (the
    exception carries it), and so does the ``max_attempts``-th answer. ``RetryPolicy(max_attempts=1)``: never.

    A followed job's stream reconnects after a dropped connection with the same backoff, up to ``max_attempts``
    times in a row without an event.
    """

    max_attempts: int = 5
    backoff_s: float = 0.5
    max_delay_s: float = 60.0
    statuses: frozenset[int] = frozenset({429, 503})

    def backoff(self, attempt: int) -> float:
        """The wait after the ``attempt``-th failure (1 for the first), before any Retry-After: capped, jittered."""
        ceiling = min(self.max_delay_s, self.backoff_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def delay(self, attempt: int, status_code: int, retry_after: float | None) -> float | None:
        """How long to wait before trying again after the ``attempt``-th answer, or None to give up."""
        if status_code not in self.statuses or retry_after is None or attempt >= self.max_attempts:
            return None
        if retry_after > self.max_delay_s:
            return None
        return max(retry_after, self.backoff(attempt))
