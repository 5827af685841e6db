"""What a model family registers: everything between a validated request and the result JSON.

A :class:`Family` is plain data and functions, so the API process (routes, checks, summaries) and the
worker processes (solve, render) share one definition without either importing the other's framework.
Nothing here imports FastAPI: workers unpickle tasks and call ``solve`` and ``render`` by reference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel

from service.em.loop import EMOptions, FitOutcome, Hooks
from service.families.bootstrap import Resampling
from service.families.limits import Footprint
from service.schemas.common import FitOptions
from service.settings import Settings

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from service.plots.fitted import Fitted

RequestT = TypeVar("RequestT", bound=FitOptions)
TaskT = TypeVar("TaskT", bound="FitTask")
SolutionT = TypeVar("SolutionT", bound="Solved")


class FitTask(Protocol):
    """A request as the solver takes it: numpy arrays and numbers, picklable, checked for limits."""

    @property
    def options(self) -> EMOptions: ...

    @property
    def work_per_iteration(self) -> int:
        """Observations x components: what one E-step costs, up to a constant (for the inline fast path).

        A task with work done once after the iterations (standard errors) also has ``work_after_fit``, in the
        same units; the fast path counts it.
        """
        ...

    @property
    def footprint(self) -> Footprint:
        """The memory and result size the fit will need at most (checked against the server's limits)."""
        ...


class Solved(Protocol):
    """A solved fit: the driver's outcome plus whatever the family derives from it."""

    @property
    def outcome(self) -> FitOutcome[Any]: ...


@dataclass(frozen=True)
class ModelUse:
    """What a family's kept model is and does (``/v1/models``): imported, then used on new data.

    A model's stored content is JSON: ``{"params", "n_features", "covariance_type"?, "log_likelihood"?}`` with
    ``params`` as a fit's result shows them. ``load`` turns it into whatever ``log_joint`` and ``sample`` take
    (arrays, factorised covariances), raising :class:`~service.em.errors.EMError` for unusable parameters; an
    import is ``load``-ed once, so it is validated exactly as a stored model is used. A family gives either
    ``log_joint`` (mixtures: predict and score follow from it) or its own ``predict`` and ``score`` (HMMs,
    whose labels are state paths and whose scores are per sequence).
    """

    import_request: type[BaseModel]  # POST /v1/models for this kind: {"kind", "params", ...}
    content_of_import: Callable[[Any], dict[str, Any]]  # an import request -> the stored content
    import_size: Callable[[Any], tuple[int, int]]  # an import's (components, dimensions), checked against the caps
    load: Callable[[dict[str, Any]], Any]
    # The observations of a predict/score request (points, sequences, counts or a dataset's array), checked
    # against the loaded model (a 422 naming the field otherwise), and how many there are.
    observations: Callable[[Any, Any, NDArray[Any] | None], Any]  # (request, model, dataset's array)
    count: Callable[[Any], int]
    sample: Callable[
        [Any, Any, int], dict[str, Any]
    ]  # (model, SampleRequest, seed) -> {"points"|"sequences", "labels"}
    sample_size: Callable[[Any, Any], int]  # numbers a sample will hold (checked against the caps first)
    # Predict and score are made from the (n, K) log p(observation, component) of independent observations ...
    log_joint: Callable[[Any, Any], NDArray[np.float64]] | None = None
    # The setting that caps this family's components (a kept model's, and an import's): targets have their own.
    components_cap: str = "max_components"
    # ... unless the observations are not independent (an HMM's steps): then the family answers them itself.
    # (model, observations, return_responsibilities) -> {"labels", "responsibilities"}
    predict: Callable[[Any, Any, bool], dict[str, Any]] | None = None
    score: Callable[[Any, Any], NDArray[np.float64]] | None = None  # -> log-likelihood per observation


@dataclass(frozen=True)
class Family(Generic[RequestT, TaskT, SolutionT]):
    """One model family. Adding a model is one solver module, one schema module and one of these.

    ``make_task`` turns a validated request into a task and enforces the server's caps (raising
    :class:`~service.em.errors.EMError`, answered 422); ``check`` does the cheap checks that need the
    arrays (shapes of given starts, enough distinct points) so a bad request is a 422 before it queues,
    without building the model. ``solve`` and ``render`` run in the worker (or inline for tiny fits).
    """

    kind: str
    title: str  # what is fitted, for route summaries: "a K-coin binomial mixture"
    description: str  # one paragraph, shown on the fit and job routes
    request: type[RequestT]
    result: type[BaseModel]
    examples: Mapping[str, dict[str, Any]]
    make_task: Callable[[RequestT, Settings, float], TaskT]
    check: Callable[[TaskT], None]
    summarise: Callable[[RequestT], dict[str, Any]]
    solve: Callable[[TaskT, Hooks | None], SolutionT]
    render: Callable[[SolutionT, str], bytes]
    keep: Callable[[SolutionT], dict[str, Any]]  # the model a solved fit keeps (see ModelUse), in the worker
    use: ModelUse
    result_examples: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    dataset_kind: str | None = None  # what an uploaded dataset must hold to be fitted by name ("points", "coins")
    resampling: Resampling | None = None  # how a job's ``bootstrap`` refits resamples (None: no bootstrap)
    # Pictures (GET .../plot). ``plot`` draws one state of a fit (a kept model's parameters, a job's with its data,
    # an animation's frame) on an empty figure: a new family's picture is this one function (service/plots/).
    # ``plot_data`` (task, solution) -> arrays is what a job keeps of its data for pictures (bounded: a histogram,
    # a subsample); without it a job's picture shows the model alone.
    plot: Callable[[Figure, Fitted], None] | None = None
    plot_data: Callable[[TaskT, SolutionT], dict[str, NDArray[Any]]] | None = None
