"""A typed Python client of the EM fitting service: ``EMClient`` (synchronous) and ``AsyncEMClient``.

from em_client import EMClient

with EMClient("http://127.0.0.1:8000") as em:
    fit = em.fit_coins(sequences=["HTTTHHTHTH", "HHHHTHHHHH"], seed=0)
    print(fit.params.biases)
"""

from em_client._async import AsyncEMClient, AsyncFollow
from em_client._sync import EMClient, Follow
from em_client.errors import (
    APIError,
    Conflict,
    EMError,
    InsufficientStorage,
    NotFound,
    PayloadTooLarge,
    Problem,
    RequestRejected,
    ServiceUnavailable,
    Unauthorized,
    UnexpectedResponse,
    UnsupportedMediaType,
)
from em_client.events import CandidateEvent, IterationEvent, JobEvent, ReplicatesEvent
from em_client.retry import RetryPolicy

__all__ = [
    "APIError",
    "AsyncEMClient",
    "AsyncFollow",
    "CandidateEvent",
    "Conflict",
    "EMClient",
    "EMError",
    "Follow",
    "InsufficientStorage",
    "IterationEvent",
    "JobEvent",
    "NotFound",
    "PayloadTooLarge",
    "Problem",
    "ReplicatesEvent",
    "RequestRejected",
    "RetryPolicy",
    "ServiceUnavailable",
    "Unauthorized",
    "UnexpectedResponse",
    "UnsupportedMediaType",
]
