"""The result serialiser: numpy straight to JSON, and never a non-finite number passed off as null."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from service.em.errors import EMError
from service.families.render import dumps


def test_a_result_with_top_level_nulls_and_finite_numbers_is_written() -> None:
    result = {"params": {"means": np.array([[0.5, 1.0]])}, "standard_errors": None, "bootstrap": None, "ll": -1.5}
    assert orjson.loads(dumps(result)) == {
        "params": {"means": [[0.5, 1.0]]}, "standard_errors": None, "bootstrap": None, "ll": -1.5,
    }  # fmt: skip


@pytest.mark.parametrize(
    "result",
    [
        {"log_likelihood": math.nan, "bootstrap": None},  # a top-level number among top-level nulls
        {"params": {"biases": np.array([0.2, np.inf])}, "standard_errors": None},  # inside an array
        {"trace": [{"delta": -math.inf}], "standard_errors": None},  # inside a list of objects
        # a nested null (a fixed parameter's error) beside a non-finite number: more nulls than top-level Nones
        {"standard_errors": {"weights": None, "biases": np.array([math.nan])}, "bootstrap": None},
    ],
)
def test_a_non_finite_number_anywhere_is_refused(result: dict[str, object]) -> None:
    with pytest.raises(EMError, match="non-finite"):
        dumps(result)


def test_nested_nulls_and_the_word_null_alone_are_not_mistaken_for_non_finite_numbers() -> None:
    result = {"standard_errors": {"weights": None}, "warnings": ["null hypothesis"], "bootstrap": None}
    assert orjson.loads(dumps(result)) == result
