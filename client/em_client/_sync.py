"""The synchronous client, made from ``_async.py`` by ``unasync.py``.

Each method builds its request with ``_calls.build`` (shared with the synchronous client) and sends it; options
are keyword arguments named as the API's fields, typed by the request's TypedDict in ``models``.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Unpack

import httpx
from httpx_sse import connect_sse

from em_client._arrays import npy_bytes
from em_client._calls import Call, T, build
from em_client._http import error_for, send
from em_client.errors import UnexpectedResponse
from em_client.events import JobEvent, StreamPosition
from em_client.models import (
    AbundanceFitRequest,
    AbundanceFitResult,
    AlleleFitRequest,
    AlleleFitResult,
    CoinFitRequest,
    CoinFitResult,
    Dataset,
    DatasetJSON,
    DatasetPage,
    GaussianFitRequest,
    GaussianFitResult,
    GaussianSelectRequest,
    HmmFitRequest,
    HmmFitResult,
    Job,
    JobPage,
    KeptModel,
    ModelImport,
    ModelPage,
    Prediction,
    PredictRequest,
    Sample,
    SampleRequest,
    Score,
    ScoreRequest,
    SelectionResult,
)
from em_client.retry import RetryPolicy

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

DEFAULT_URL = "http://127.0.0.1:8000"
# A synchronous fit may take the server's whole default time limit (60 s) and then some to answer.
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=10.0)
# A followed job may go quiet for long; the service sends a comment every 15 s meanwhile, so a read that waits
# much longer than that has lost its connection (and resumes).
FOLLOW_TIMEOUT = httpx.Timeout(10.0, read=60.0)

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobKind = Literal["coins", "gaussian", "alleles", "abundances", "hmm", "gaussian_select"]


class EMClient:
    """A client of the EM fitting service.

    ``api_key`` is sent as ``Authorization: Bearer <key>``; ``retry`` says which answers are tried again (by
    default 503/429 with Retry-After, up to 5 attempts); ``strict=True`` raises on result fields this client does
    not know (by default they are ignored, so a newer server works with an older client). ``transport`` and
    ``headers`` go to httpx. Use it as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        strict: bool = False,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        sent = dict(headers or {})
        if api_key is not None:
            sent["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(base_url=base_url, timeout=timeout, headers=sent, transport=transport)
        self.retry = retry or RetryPolicy()
        self.strict = strict

    def __enter__(self) -> EMClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call[T]) -> T:
        return send(self._http, call, self.retry, self.strict)

    # Synchronous fits: POST /v1/fit/{kind}, answered with the result.

    def fit_coins(self, **options: Unpack[CoinFitRequest]) -> CoinFitResult:
        """Fit a K-coin binomial mixture (``sequences``, ``counts`` or ``dataset``)."""
        return self._send(build("fit_coins", CoinFitResult, body=options))

    def fit_gaussian(self, **options: Unpack[GaussianFitRequest]) -> GaussianFitResult:
        """Fit a Gaussian mixture to ``points`` (or an uploaded ``dataset``)."""
        return self._send(build("fit_gaussian", GaussianFitResult, body=options))

    def fit_alleles(self, **options: Unpack[AlleleFitRequest]) -> AlleleFitResult:
        """Estimate allele frequencies from phenotype counts (gene counting)."""
        return self._send(build("fit_alleles", AlleleFitResult, body=options))

    def fit_abundances(self, **options: Unpack[AbundanceFitRequest]) -> AbundanceFitResult:
        """Estimate transcript abundances from equivalence classes of reads."""
        return self._send(build("fit_abundances", AbundanceFitResult, body=options))

    def fit_hmm(self, **options: Unpack[HmmFitRequest]) -> HmmFitResult:
        """Fit a hidden Markov model to ``sequences`` (Baum-Welch)."""
        return self._send(build("fit_hmm", HmmFitResult, body=options))

    def select_gaussian(self, **options: Unpack[GaussianSelectRequest]) -> SelectionResult:
        """Fit every K in ``n_components`` for every type in ``covariance_types``; name the best by ``criterion``."""
        return self._send(build("select_gaussian", SelectionResult, body=options))

    # Jobs: POST /v1/jobs/{kind} answers 202 with the queued job; follow() or wait() for its end.

    def submit_coins(self, **options: Unpack[CoinFitRequest]) -> Job:
        """Start a job that fits a K-coin binomial mixture."""
        return self._send(build("submit_coins", Job, body=options))

    def submit_gaussian(self, **options: Unpack[GaussianFitRequest]) -> Job:
        """Start a job that fits a Gaussian mixture."""
        return self._send(build("submit_gaussian", Job, body=options))

    def submit_alleles(self, **options: Unpack[AlleleFitRequest]) -> Job:
        """Start a job that estimates allele frequencies."""
        return self._send(build("submit_alleles", Job, body=options))

    def submit_abundances(self, **options: Unpack[AbundanceFitRequest]) -> Job:
        """Start a job that estimates transcript abundances."""
        return self._send(build("submit_abundances", Job, body=options))

    def submit_hmm(self, **options: Unpack[HmmFitRequest]) -> Job:
        """Start a job that fits a hidden Markov model."""
        return self._send(build("submit_hmm", Job, body=options))

    def submit_gaussian_select(self, **options: Unpack[GaussianSelectRequest]) -> Job:
        """Start a model selection job (its events are candidates, its result a SelectionResult)."""
        return self._send(build("submit_gaussian_select", Job, body=options))

    def list_jobs(
        self,
        *,
        limit: int = 20,
        cursor: str | None = None,
        status: JobStatus | None = None,
        kind: JobKind | None = None,
    ) -> JobPage:
        """Recent jobs, newest first, without their results; pass ``next_cursor`` as ``cursor`` for the next page."""
        params = {"limit": limit, "cursor": cursor, "status": status, "kind": kind}
        return self._send(build("list_jobs", JobPage, params=params))

    def get_job(self, job_id: str) -> Job:
        """A job: status, progress, and its result once it succeeded."""
        return self._send(build("get_job", Job, path={"job_id": job_id}))

    def plot_job(
        self,
        job_id: str,
        *,
        view: Literal["fit", "trace", "animation"] = "fit",
        format: Literal["png", "svg"] | None = None,
        width: int | None = None,
        height: int | None = None,
    ) -> bytes:
        """A picture of a finished job: PNG (or SVG with ``format="svg"``) of its fit or its trace, or with
        ``view="animation"`` a GIF of its parameters converging (a fit with ``trace="params"``)."""
        params = {"view": view, "format": format, "width": width, "height": height}
        return self._send(build("plot_job", bytes, path={"job_id": job_id}, params=params))

    def cancel_job(self, job_id: str) -> Job:
        """Cancel a queued or running job (``Conflict`` if it already finished)."""
        return self._send(build("cancel_job", Job, path={"job_id": job_id}))

    def follow(self, job_id: str, *, last_event_id: int | None = None) -> Follow:
        """Follow a job live: iterate the returned object for its events (IterationEvent, CandidateEvent), then
        read ``.job`` for the final job. A dropped connection is resumed with ``Last-Event-ID``: each event comes
        once. ``last_event_id`` starts after that event (as a reconnecting follower would)."""
        return Follow(self, job_id, StreamPosition(last_event_id, self.strict))

    def wait(self, job_id: str) -> Job:
        """The job once it has finished (succeeded, failed or cancelled: check ``status``)."""
        return self.follow(job_id).wait()

    # Datasets: upload once, fit many times by id (``dataset=...`` in any fit, job or selection).

    def upload_dataset(self, **data: Unpack[DatasetJSON]) -> Dataset:
        """Upload ``points``, ``sequences`` or ``counts`` as JSON."""
        return self._send(build("upload_dataset", Dataset, body=data))

    def upload_array(self, array: ArrayLike) -> Dataset:
        """Upload a numpy array (1-D or 2-D; NaN marks a missing coordinate) as NPY: needs the numpy extra."""
        return self._send(build("upload_array", Dataset, content=npy_bytes(array)))

    def upload_arrow(self, stream: bytes) -> Dataset:
        """Upload an Arrow IPC stream (numeric columns, no nulls)."""
        return self._send(build("upload_arrow", Dataset, content=stream))

    def upload_csv(self, text: str | bytes) -> Dataset:
        """Upload CSV: numbers separated by commas, an optional header line."""
        content = text.encode() if isinstance(text, str) else text
        return self._send(build("upload_csv", Dataset, content=content))

    def list_datasets(self, *, limit: int = 20, cursor: str | None = None) -> DatasetPage:
        """Your datasets, newest first."""
        params = {"limit": limit, "cursor": cursor}
        return self._send(build("list_datasets", DatasetPage, params=params))

    def get_dataset(self, dataset_id: str) -> Dataset:
        """A dataset's record."""
        return self._send(build("get_dataset", Dataset, path={"dataset_id": dataset_id}))

    def delete_dataset(self, dataset_id: str) -> None:
        """Remove a dataset (``Conflict`` while a queued or running job fits it)."""
        self._send(build("delete_dataset", type(None), path={"dataset_id": dataset_id}))

    # Kept models: every succeeded fit keeps one (its result's model_id); parameters can be imported too.

    def list_models(self, *, limit: int = 20, cursor: str | None = None) -> ModelPage:
        """Your kept models, newest first (without their parameters)."""
        params = {"limit": limit, "cursor": cursor}
        return self._send(build("list_models", ModelPage, params=params))

    def get_model(self, model_id: str) -> KeptModel:
        """A kept model, with its parameters."""
        return self._send(build("get_model", KeptModel, path={"model_id": model_id}))

    def plot_model(
        self,
        model_id: str,
        *,
        view: Literal["fit", "trace", "animation"] = "fit",
        format: Literal["png", "svg"] | None = None,
        width: int | None = None,
        height: int | None = None,
    ) -> bytes:
        """A picture of a kept model (drawn as its job while that is stored; otherwise the model alone)."""
        params = {"view": view, "format": format, "width": width, "height": height}
        return self._send(build("plot_model", bytes, path={"model_id": model_id}, params=params))

    def delete_model(self, model_id: str) -> None:
        """Forget a kept model."""
        self._send(build("delete_model", type(None), path={"model_id": model_id}))

    def import_model(self, **model: Unpack[ModelImport]) -> KeptModel:
        """Keep parameters fitted elsewhere: ``kind`` and ``params`` as a result shows them (plus the family's own
        fields: ``covariance_type``, ``emission``, ``alleles``, ``phenotypes``)."""
        return self._send(build("import_model", KeptModel, body=model))

    def predict(self, model_id: str, /, **observations: Unpack[PredictRequest]) -> Prediction:
        """The most probable component of each observation (and with ``return_responsibilities``, each one's)."""
        call = build("predict", Prediction, path={"model_id": model_id}, body=observations)
        return self._send(call)

    def score(self, model_id: str, /, **observations: Unpack[ScoreRequest]) -> Score:
        """The log-likelihood of each observation under the model."""
        return self._send(build("score", Score, path={"model_id": model_id}, body=observations))

    def sample(self, model_id: str, /, **options: Unpack[SampleRequest]) -> Sample:
        """Draw ``n`` observations from the model (and the seed used, to draw them again)."""
        return self._send(build("sample", Sample, path={"model_id": model_id}, body=options))

    # Operations.

    def health(self) -> dict[str, str]:
        """Liveness: ``{"status": "ok"}`` while the process serves requests."""
        return self._send(build("health", dict[str, str]))

    def ready(self) -> dict[str, str | int]:
        """Readiness: ``{"status": "ready", ...}``, or ``"not ready"`` with the reason (a 503, returned as is)."""
        call = build("ready", dict[str, str | int], answers=frozenset({503}))
        return self._send(call)

    def metrics(self) -> str:
        """The Prometheus metrics, as text."""
        return self._send(build("metrics", str))


class Follow:
    """A job's events as they happen (``for event in follow``), then the final job (``follow.job``).

    Reconnects after a dropped connection with ``Last-Event-ID`` (each event is handed on once, none is lost), up
    to the client's ``retry.max_attempts`` times in a row without an event; then the last error is raised.
    """

    def __init__(self, client: EMClient, job_id: str, position: StreamPosition) -> None:
        self.job_id = job_id
        self._client = client
        self._position = position
        self._events = self._stream()

    def __iter__(self) -> Follow:
        return self

    def __next__(self) -> JobEvent:
        return self._events.__next__()

    @property
    def job(self) -> Job:
        """The job as its final event carried it (raises until the events have all been read)."""
        if self._position.job is None:
            raise RuntimeError(f"job {self.job_id} has not been followed to its end: iterate first, or use wait()")
        return self._position.job

    @property
    def last_event_id(self) -> int | None:
        """The id of the last event handed on (what a reconnection sends as Last-Event-ID)."""
        return self._position.last_event_id

    def wait(self) -> Job:
        """Read the remaining events and return the final job."""
        for _ in self:
            pass
        return self.job

    def close(self) -> None:
        """Stop following (closes the connection of a follow left before its end)."""
        self._events.close()

    def _stream(self) -> Generator[JobEvent]:
        client, position = self._client, self._position
        path = build("follow", type(None), path={"job_id": self.job_id}).path
        failures = 0
        while True:
            error: Exception = UnexpectedResponse(f"the events of job {self.job_id} ended without a final event")
            try:
                with connect_sse(
                    client._http, "GET", path, headers=position.headers(), timeout=FOLLOW_TIMEOUT
                ) as source:
                    if source.response.status_code != 200:
                        source.response.read()
                        raise error_for(source.response)
                    for sse in source.iter_sse():
                        failures = 0
                        event = position.accept(sse)
                        if event is not None:
                            yield event
                        if position.job is not None:
                            return
            except httpx.TransportError as dropped:  # cut, timed out or refused: resume after the last event
                error = dropped
            failures += 1
            if failures >= client.retry.max_attempts:
                raise error
            time.sleep(client.retry.backoff(failures))
