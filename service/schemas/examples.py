"""Worked request examples shown in Swagger UI (``openapi_examples``)."""

from __future__ import annotations

from typing import Any

DO_BATZOGLOU_SEQUENCES = ["HTTTHHTHTH", "HHHHTHHHHH", "HTHHHHHTHH", "HTHTTTHHTT", "THHHTHHHTH"]

COIN_EXAMPLES: dict[str, dict[str, Any]] = {
    "do_batzoglou": {
        "summary": "Do & Batzoglou (2008): five experiments, two coins",
        "description": "From biases 0.6 / 0.5 EM converges to 0.7968 / 0.5196, as in the paper's figure.",
        "value": {"sequences": DO_BATZOGLOU_SEQUENCES, "n_coins": 2, "init": {"biases": [0.6, 0.5]}},
    },
    "counts_fit_weights": {
        "summary": "Heads/tails counts, three coins, weights estimated too",
        "value": {
            "counts": [
                {"heads": 9, "tails": 1},
                {"heads": 8, "tails": 2},
                {"heads": 5, "tails": 5},
                {"heads": 4, "tails": 6},
                {"heads": 1, "tails": 9},
                {"heads": 2, "tails": 8},
                {"heads": 9, "tails": 1},
            ],
            "n_coins": 3,
            "fit_weights": True,
            "n_init": 5,
            "seed": 1,
        },
    },
}

GAUSSIAN_EXAMPLES: dict[str, dict[str, Any]] = {
    "two_groups_1d": {
        "summary": "1-D: two normal groups of 15 points (means -2 and 3)",
        "description": "Estimates each group's weight, mean and standard deviation (params.stds).",
        "value": {
            "points": [
                -2.0,
                -1.85,
                -2.14,
                -2.45,
                -2.23,
                -2.5,
                -1.97,
                -1.33,
                -2.25,
                -2.31,
                -1.76,
                -1.82,
                -1.95,
                -2.47,
                -2.01,
                3.7,
                1.66,
                2.54,
                1.1,
                1.71,
                1.16,
                2.76,
                1.73,
                3.27,
                3.16,
                2.81,
                0.48,
                2.46,
                2.95,
                3.11,
            ],
            "n_components": 2,
            "seed": 0,
        },
    },
    "three_clusters_2d": {
        "summary": "2-D: three clusters around (0,0), (5,5), (0,5)",
        "value": {
            "points": [
                [-0.77, -0.24],
                [-0.49, -0.4],
                [0.53, -0.4],
                [-0.02, 0.44],
                [-0.29, -0.06],
                [0.06, 0.03],
                [-0.61, 0.04],
                [0.68, -0.77],
                [5.43, 5.06],
                [4.68, 6.0],
                [5.38, 4.4],
                [5.04, 5.29],
                [4.91, 5.34],
                [4.97, 5.33],
                [5.72, 4.66],
                [5.1, 4.77],
                [0.06, 4.41],
                [-0.29, 4.9],
                [0.45, 5.57],
                [-0.66, 4.6],
                [0.32, 4.0],
                [-0.23, 4.95],
                [0.63, 5.34],
                [-0.16, 4.82],
            ],
            "n_components": 3,
            "covariance_type": "full",
            "n_init": 3,
            "seed": 42,
        },
    },
}
