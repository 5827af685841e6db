"""Every start's log-likelihood per iteration, as a fit runs: what a job's trace picture draws.

A result's ``trace`` holds the returned start alone; a picture of how the starts compare needs all of them.
Each start keeps at most ``per_start`` points: when a start reaches it, every other point is dropped (the stride
doubles), so a 10,000-iteration start costs as little memory as a short one and its line keeps its shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

PER_START = 1000


@dataclass
class _Start:
    iterations: list[int] = field(default_factory=list)
    log_likelihoods: list[float] = field(default_factory=list)
    stride: int = 1
    last: tuple[int, float] | None = None  # the latest iteration, kept whatever the stride


class StartTraces:
    def __init__(self, per_start: int = PER_START) -> None:
        self.per_start = per_start
        self._starts: dict[int, _Start] = {}

    def add(self, start: int, iteration: int, log_likelihood: float) -> None:
        run = self._starts.setdefault(start, _Start())
        run.last = (iteration, log_likelihood)
        if iteration % run.stride:
            return
        run.iterations.append(iteration)
        run.log_likelihoods.append(log_likelihood)
        if len(run.iterations) >= self.per_start:
            run.iterations, run.log_likelihoods = run.iterations[::2], run.log_likelihoods[::2]
            run.stride *= 2

    def arrays(self) -> dict[str, NDArray[np.float64]]:
        """``start``, ``iteration`` and ``log_likelihood`` of every kept point, by start then iteration."""
        starts: list[int] = []
        iterations: list[int] = []
        values: list[float] = []
        for start, run in sorted(self._starts.items()):
            points = list(zip(run.iterations, run.log_likelihoods, strict=True))
            if run.last is not None and (not points or points[-1][0] != run.last[0]):
                points.append(run.last)
            starts += [start] * len(points)
            iterations += [i for i, _ in points]
            values += [v for _, v in points]
        return {
            "start": np.asarray(starts, dtype=np.float64),
            "iteration": np.asarray(iterations, dtype=np.float64),
            "log_likelihood": np.asarray(values, dtype=np.float64),
        }
