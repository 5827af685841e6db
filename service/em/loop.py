"""The one EM driver: starts, iterations, tolerance, limits, cancellation, trace and best-of-``n_init``.

Every model goes through :func:`run_em`; a model only supplies the small hooks of :class:`EMModel`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, Literal, Protocol, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

from service.em.errors import EMError

ParamsT = TypeVar("ParamsT")
StatsT = TypeVar("StatsT")
TraceMode = Literal["loglik", "params", "none"]
StopReason = Literal["converged", "max_iter", "time_limit", "cancelled"]

# Derived start seeds stay below 2**32 so they survive any JSON client as exact integers.
_SEED_BOUND = 2**32


class EMModel(Protocol[ParamsT, StatsT]):
    """The hooks a model fills; the driver owns everything else.

    Named for EM, not for mixtures: any model with a latent assignment per observation fills the same
    hooks (a hidden Markov model's states play the components' part).

    ``StatsT`` is whatever the E-step hands the M-step: the responsibilities themselves, or (to spare an
    n x K array between the two steps) the sums of them the M-step needs, taken in the E-step's pass.
    """

    @property
    def n_observations(self) -> int:
        """What the mean log-likelihood (and so ``tol``) is taken per: experiments, points."""
        ...

    def initialize(self, rng: np.random.Generator) -> ParamsT:
        """Starting parameters for one start, drawing every random choice from ``rng``."""
        ...

    def e_step(self, params: ParamsT) -> tuple[float, StatsT]:
        """Total observed-data log-likelihood at ``params`` and what the M-step needs of the responsibilities."""
        ...

    def m_step(self, stats: StatsT, params: ParamsT) -> tuple[ParamsT, list[str]]:
        """New parameters from the E-step's statistics, plus warnings about anything regularised."""
        ...

    def log_responsibilities(self, params: ParamsT) -> NDArray[np.float64]:
        """The n x K log-responsibilities at ``params`` (asked once, for the returned start)."""
        ...

    def diagnose(self, params: ParamsT) -> list[str]:
        """Warnings about the returned parameters themselves (asked once): a component that explains no data,
        components that coincide. Indices are those of ``params``, in the order results are reported."""
        ...

    def canonical_order(self, params: ParamsT) -> NDArray[np.intp]:
        """The permutation of components into the order results are reported in."""
        ...

    def permute(self, params: ParamsT, order: NDArray[np.intp]) -> ParamsT:
        """``params`` with components reordered by ``order``."""
        ...

    def to_dict(self, params: ParamsT) -> dict[str, Any]:
        """Plain-Python parameters, as they appear in results and in the trace."""
        ...


@dataclass(frozen=True)
class EMOptions:
    """Per-fit options shared by every model (see the ``Common fit options`` of the API)."""

    max_iter: int = 100
    tol: float = 1e-6
    n_init: int = 1
    seed: int | None = None
    trace: TraceMode = "loglik"
    time_limit_s: float | None = None
    canonical_order: bool = True

    def __post_init__(self) -> None:
        if self.max_iter < 1:
            raise EMError(f"max_iter must be at least 1, got {self.max_iter}", "max_iter")
        if not (self.tol >= 0 and math.isfinite(self.tol)):
            raise EMError(f"tol must be a finite number >= 0, got {self.tol}", "tol")
        if self.n_init < 1:
            raise EMError(f"n_init must be at least 1, got {self.n_init}", "n_init")
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise EMError(f"time_limit_s must be > 0, got {self.time_limit_s}", "time_limit_s")


@dataclass(frozen=True)
class TraceEntry:
    iteration: int
    log_likelihood: float
    delta: float
    params: dict[str, Any] | None = None


@dataclass(frozen=True)
class RestartSummary:
    seed: int
    log_likelihood: float
    n_iter: int
    converged: bool


@dataclass
class FitOutcome(Generic[ParamsT]):
    """The returned start: parameters, the state they imply, and how the run went."""

    params: ParamsT
    log_likelihood: float
    n_iter: int
    converged: bool
    stop_reason: StopReason
    trace: list[TraceEntry]
    restarts: list[RestartSummary]
    returned_start: int  # index into restarts of the start these params come from
    warnings: list[str]
    elapsed_s: float
    log_responsibilities_of: Callable[[ParamsT], NDArray[np.float64]] = field(repr=False, compare=False)

    @cached_property
    def log_resp(self) -> NDArray[np.float64]:
        """The returned start's log-responsibilities (n x K): one more E-step, taken when first asked for. A fit
        that reports only labels takes them a chunk at a time instead, and never holds the n x K array."""
        return self.log_responsibilities_of(self.params)


@dataclass
class _StartRun(Generic[ParamsT]):
    seed: int
    params: ParamsT
    log_likelihood: float
    n_iter: int = 0
    stop_reason: StopReason = "max_iter"
    trace_params: list[ParamsT | None] = field(default_factory=list)
    trace: list[tuple[int, float, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class Hooks:
    """What a caller may observe or steer while a fit runs (progress reporting, cancellation).

    The default does nothing; a job runner overrides the two methods.
    """

    def on_iteration(self, start: int, iteration: int, log_likelihood: float, delta: float) -> None:
        """Called after every EM iteration of every start."""

    def should_cancel(self) -> bool:
        """Polled between iterations; True stops the fit with ``stop_reason == "cancelled"``."""
        return False


def start_seeds(seed: int | None, n_init: int) -> list[int]:
    """The seed of every start: the first is ``seed`` itself, so ``n_init=1, seed=s`` replays that start."""
    if seed is None:
        # A seed needs no secrecy: the random module's generator (seeded from the OS at start-up, and again in
        # every forked worker) answers in a microsecond; the OS itself (secrets) and a SeedSequence take twenty.
        seed = random.getrandbits(32)
    if n_init == 1:
        return [seed]  # small sync fits are a handful of iterations: spare them the derivation below
    derived = np.random.SeedSequence(seed).generate_state(max(n_init - 1, 0), dtype=np.uint32)
    return [seed, *(int(s) % _SEED_BOUND for s in derived)]


class _GeneratorOnFirstUse:
    """``np.random.default_rng(seed)``, built when a start first draws from it.

    A start from given parameters draws nothing, and building a Generator (hashing the seed into its state)
    costs as much as a few iterations of a small fit.
    """

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._generator: np.random.Generator | None = None

    def __getattr__(self, name: str) -> Any:
        if self._generator is None:
            self._generator = np.random.default_rng(self._seed)
        return getattr(self._generator, name)


def run_em(
    model: EMModel[ParamsT, StatsT],
    options: EMOptions,
    hooks: Hooks | None = None,
) -> FitOutcome[ParamsT]:
    """Run ``options.n_init`` EM starts and return the one with the highest final log-likelihood.

    Entry *i* of the trace is the state after the *i*-th M-step; its ``delta`` is the change in
    the mean log-likelihood per observation since the state before (for *i* = 1, the start).
    The run stops when ``|delta| <= tol`` (never when ``tol == 0``), after ``max_iter`` iterations,
    when the time budget runs out, or when the hooks ask to cancel. Every stop leaves a consistent
    state: responsibilities and log-likelihood always belong to the returned parameters.
    """
    hooks = hooks or Hooks()
    started = time.monotonic()
    deadline = None if options.time_limit_s is None else started + options.time_limit_s

    runs: list[_StartRun[ParamsT]] = []
    for index, seed in enumerate(start_seeds(options.seed, options.n_init)):
        # Later starts are skipped once time is up or the caller cancelled; the first always runs
        # so there is a state to return.
        if runs and (_past(deadline) or hooks.should_cancel()):
            break
        params = model.initialize(cast(np.random.Generator, _GeneratorOnFirstUse(seed)))
        runs.append(_run_start(model, options, hooks, index, seed, params, deadline))
        _forget_traces_of_beaten_starts(runs)
        if runs[-1].stop_reason in ("cancelled", "time_limit"):
            break

    best = max(runs, key=lambda run: run.log_likelihood)  # first of equals wins: max() keeps it
    return _outcome(model, options, best, runs, time.monotonic() - started)


def _forget_traces_of_beaten_starts(runs: list[_StartRun[ParamsT]]) -> None:
    """Only the returned start's trace is reported: drop the others' as soon as they are beaten, so a
    ``trace: "params"`` fit holds one start's snapshots, not ``n_init`` of them."""
    best = max(runs, key=lambda run: run.log_likelihood)
    for run in runs:
        if run is not best:
            run.trace, run.trace_params = [], []


def _run_start(
    model: EMModel[ParamsT, StatsT],
    options: EMOptions,
    hooks: Hooks,
    index: int,
    seed: int,
    params: ParamsT,
    deadline: float | None,
) -> _StartRun[ParamsT]:
    n_obs = model.n_observations
    log_likelihood, stats = model.e_step(params)
    run = _StartRun(seed=seed, params=params, log_likelihood=log_likelihood)
    warnings: dict[str, None] = {}  # ordered set: a warning repeated every iteration is said once
    delta = np.inf

    for iteration in range(1, options.max_iter + 1):
        if hooks.should_cancel():
            run.stop_reason = "cancelled"
            break
        if _past(deadline):
            run.stop_reason = "time_limit"
            break
        params, step_warnings = model.m_step(stats, params)
        warnings.update(dict.fromkeys(step_warnings))
        new_log_likelihood, stats = model.e_step(params)
        delta = (new_log_likelihood - log_likelihood) / n_obs
        log_likelihood = new_log_likelihood
        run.params, run.log_likelihood, run.n_iter = params, log_likelihood, iteration
        if options.trace != "none":
            run.trace.append((iteration, log_likelihood, delta))
            run.trace_params.append(params if options.trace == "params" else None)
        hooks.on_iteration(index, iteration, log_likelihood, delta)
        if options.tol > 0 and abs(delta) <= options.tol:
            run.stop_reason = "converged"
            break
    if run.stop_reason == "max_iter" and options.tol > 0:  # with tol = 0 the caller asked for max_iter iterations
        warnings[_not_converged_warning(options, delta)] = None
    run.warnings = list(warnings)
    return run


def _not_converged_warning(options: EMOptions, delta: float) -> str:
    return (
        f"stopped at max_iter = {options.max_iter} without converging: the last change in mean log-likelihood "
        f"({abs(delta):.3g}) is above tol = {options.tol:g} — raise max_iter, or tol"
    )


def _outcome(
    model: EMModel[ParamsT, StatsT],
    options: EMOptions,
    best: _StartRun[ParamsT],
    runs: Sequence[_StartRun[ParamsT]],
    elapsed_s: float,
) -> FitOutcome[ParamsT]:
    params = best.params
    order: NDArray[np.intp] | None = None
    if options.canonical_order:
        order = model.canonical_order(params)
        params = model.permute(params, order)

    def trace_params(snapshot: ParamsT | None) -> dict[str, Any] | None:
        if snapshot is None:
            return None
        return model.to_dict(snapshot if order is None else model.permute(snapshot, order))

    trace = [
        TraceEntry(iteration=i, log_likelihood=ll, delta=d, params=trace_params(p))
        for (i, ll, d), p in zip(best.trace, best.trace_params, strict=True)
    ]
    restarts = [
        RestartSummary(
            seed=run.seed,
            log_likelihood=run.log_likelihood,
            n_iter=run.n_iter,
            converged=run.stop_reason == "converged",
        )
        for run in runs
    ]
    _check_finite(best.log_likelihood)
    return FitOutcome(
        params=params,
        log_likelihood=best.log_likelihood,
        n_iter=best.n_iter,
        converged=best.stop_reason == "converged",
        stop_reason=best.stop_reason,
        trace=trace,
        restarts=restarts,
        returned_start=next(i for i, run in enumerate(runs) if run is best),
        warnings=[*best.warnings, *model.diagnose(params)],
        elapsed_s=elapsed_s,
        # Labels and responsibilities belong to the returned start's params.
        log_responsibilities_of=model.log_responsibilities,
    )


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _check_finite(log_likelihood: float) -> None:
    if not math.isfinite(log_likelihood):
        raise EMError(
            "the fit became numerically degenerate (log-likelihood is not finite); "
            "try fewer components, a larger reg_covar, or other starting parameters"
        )
