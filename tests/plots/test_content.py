"""A picture follows its fit: read back from the figure's own data (lines, patches, bars, images), not by eye."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse, Rectangle

from service.plots.gaussian import components, principal_axes
from service.plots.render import figure_of, frame_indices
from service.plots.trace import returned_start
from tests.conftest import DO_BATZOGLOU
from tests.plots.helpers import example_body, solve_job


def _by_gid(figure, kind):
    found = {}
    for ax in figure.get_axes():
        for artist in ax.get_children():
            if isinstance(artist, kind) and artist.get_gid():
                found[artist.get_gid()] = artist
    return found


def _texts(figure):
    return " ".join(text.get_text() for text in figure.findobj(lambda artist: hasattr(artist, "get_text")))


def test_1d_density_peaks_sit_at_the_fitted_means():
    job = solve_job("gaussian", example_body("gaussian", "two_groups_1d"))
    means = np.asarray(job.result["params"]["means"])[:, 0]
    lines = _by_gid(figure_of(job.picture()), Line2D)
    for k, mean in enumerate(means):
        x, y = lines[f"c{k}"].get_data()
        assert x[np.argmax(y)] == pytest.approx(mean, abs=1e-12)
    x, y = lines["mixture"].get_data()
    components_sum = sum(lines[f"c{k}"].get_data()[1] for k in range(len(means)))
    np.testing.assert_allclose(y, components_sum)
    # The histogram is a density over every point: it integrates to 1.
    ax = figure_of(job.picture()).get_axes()[0]
    stairs = next(patch for patch in ax.patches)
    heights, edges = stairs.get_data()[:2]  # type: ignore[attr-defined]
    assert float(np.sum(heights * np.diff(edges))) == pytest.approx(1.0)


def test_2d_ellipse_centres_are_the_means_and_their_axes_the_covariances():
    job = solve_job("gaussian", example_body("gaussian", "three_clusters_2d"))
    weights, means, covariances = components(job.result["params"], "full")
    ellipses = _by_gid(figure_of(job.picture()), Ellipse)
    for k in range(len(weights)):
        for sigmas in (1, 2):
            ellipse = ellipses[f"c{k}-{sigmas}sigma"]
            np.testing.assert_allclose(ellipse.center, means[k])
            major, minor = 2 * sigmas * np.sqrt(np.linalg.eigvalsh(covariances[k])[::-1])
            assert (ellipse.width, ellipse.height) == pytest.approx((major, minor))


def test_3d_points_are_drawn_on_the_mixtures_principal_plane_and_a_large_cloud_is_subsampled_and_says_so():
    rng = np.random.default_rng(3)
    centres = np.array([[0.0, 0.0, 0.0], [6.0, 1.0, -2.0]])
    points = np.concatenate([rng.normal(c, 1.0, size=(12_500, 3)) for c in centres])
    job = solve_job("gaussian", {"points": points.tolist(), "n_components": 2, "seed": 0, "return_labels": False})
    figure = figure_of(job.picture())
    weights, means, covariances = components(job.result["params"], "full")
    centre, axes = principal_axes(weights, means, covariances)
    ellipses = _by_gid(figure, Ellipse)
    for k in range(2):
        np.testing.assert_allclose(ellipses[f"c{k}-1sigma"].center, (means[k] - centre) @ axes, atol=1e-9)
    scatter = next(c for c in figure.get_axes()[0].collections if c.get_gid() == "points")
    assert len(scatter.get_offsets()) == 20_000
    assert "showing 20,000 of 25,000 points (a random subsample)" in _texts(figure)
    assert "principal axis 1" in _texts(figure)


def test_coin_bias_lines_are_the_fitted_biases_over_every_experiment_split_by_responsibility():
    job = solve_job("coins", {"sequences": DO_BATZOGLOU, "init": {"biases": [0.6, 0.5]}, "tol": 1e-8})
    biases = job.result["params"]["biases"]
    figure = figure_of(job.picture())
    lines = _by_gid(figure, Line2D)
    for k, bias in enumerate(biases):
        assert lines[f"bias{k}"].get_xdata()[0] == pytest.approx(bias)
    bars = [patch for patch in figure.get_axes()[0].patches if isinstance(patch, Rectangle)]
    # Each experiment adds its responsibilities (summing to 1) to the stacked bars: the bars hold 5 experiments.
    stacked = np.array(job.result["responsibilities"]).sum(axis=0)
    heights_by_colour: dict[tuple[float, ...], float] = {}
    for bar in bars:
        heights_by_colour[tuple(bar.get_facecolor())] = (
            heights_by_colour.get(tuple(bar.get_facecolor()), 0.0) + bar.get_height()
        )
    np.testing.assert_allclose(sorted(heights_by_colour.values()), sorted(stacked), atol=1e-9)
    assert "stopped: converged" in _texts(figure) and "log-likelihood -31.57" in _texts(figure)


def test_allele_bars_are_the_fitted_frequencies_and_the_phenotype_counts():
    job = solve_job("alleles", example_body("alleles", "peppered_moth"))
    figure = figure_of(job.picture())
    frequencies_ax, phenotypes_ax = figure.get_axes()[:2]
    heights = [bar.get_height() for bar in frequencies_ax.patches]
    np.testing.assert_allclose(heights, job.result["params"]["frequencies"])
    observed = [bar.get_height() for bar in phenotypes_ax.patches if bar.get_gid() == "observed"]
    np.testing.assert_allclose(observed, [85, 196, 341])
    expected = [bar.get_height() for bar in phenotypes_ax.patches if bar.get_gid() == "expected"]
    assert len(expected) == 3 and sum(expected) == pytest.approx(622)


def test_abundance_bars_are_the_fitted_tpm_and_counts():
    job = solve_job("abundances", example_body("abundances"))
    top, bottom = figure_of(job.picture()).get_axes()[:2]
    np.testing.assert_allclose([bar.get_height() for bar in top.patches], job.result["params"]["tpm"])
    np.testing.assert_allclose([bar.get_height() for bar in bottom.patches], job.result["params"]["est_counts"])


def test_hmm_shows_the_fitted_transitions_emissions_and_viterbi_states():
    job = solve_job("hmm", example_body("hmm", "dishonest_casino"))
    figure = figure_of(job.picture())
    images = [image for ax in figure.get_axes() for image in ax.get_images() if image.get_gid() == "transitions"]
    np.testing.assert_allclose(np.asarray(images[0].get_array()), job.result["params"]["transitions"])
    sequence_ax = figure.get_axes()[0]
    states = np.asarray(job.result["labels"][0])
    for k in range(2):
        scatter = next(c for c in sequence_ax.collections if c.get_gid() == f"state{k}")
        np.testing.assert_array_equal(scatter.get_offsets()[:, 0], np.flatnonzero(states == k))
    emission_bars = next(ax for ax in figure.get_axes() if ax.get_title() == "emission probabilities").patches
    heights = np.array([bar.get_height() for bar in emission_bars]).reshape(2, -1)
    np.testing.assert_allclose(heights, job.result["params"]["emissions"])


def test_trace_lines_are_every_starts_log_likelihoods_the_returned_one_equal_to_the_results_trace():
    job = solve_job("gaussian", example_body("gaussian", "two_groups_1d", n_init=4, seed=3, tol=1e-10))
    result = job.result
    lines = _by_gid(figure_of(job.picture("trace")), Line2D)
    assert sorted(lines) == [f"start{s}" for s in range(4)]
    returned = lines[f"start{returned_start(result)}"]
    np.testing.assert_allclose(returned.get_ydata(), [t["log_likelihood"] for t in result["trace"]])
    np.testing.assert_array_equal(returned.get_xdata(), [t["iteration"] for t in result["trace"]])
    for start, restart in enumerate(result["restarts"]):
        assert lines[f"start{start}"].get_ydata()[-1] == pytest.approx(restart["log_likelihood"])


def test_a_selection_draws_each_covariance_types_criterion_against_k_and_stars_the_best():
    from service.families import gaussian_select
    from service.plots.render import PictureTask

    candidates = [
        {"n_components": k, "covariance_type": t, "bic": 100.0 / k + (5 if t == "diag" else 0), "aic": 1.0,
         "icl": 1.0, "degenerate": False, "converged": True, "stop_reason": "converged", "model_id": f"{t}{k}"}
        for t in ("full", "diag") for k in (1, 2, 3)
    ]  # fmt: skip
    result = gaussian_select.result(candidates, "bic", "sel", 0.1)
    figure = figure_of(PictureTask("gaussian_select", "fit", "png", 640, 480, "job sel", result))
    lines = _by_gid(figure, Line2D)
    np.testing.assert_allclose(lines["full"].get_ydata(), [100.0, 50.0, 100.0 / 3])
    np.testing.assert_allclose(lines["diag"].get_ydata(), [105.0, 55.0, 100.0 / 3 + 5])
    assert (lines["best"].get_xdata()[0], lines["best"].get_ydata()[0]) == (3, pytest.approx(100.0 / 3))


def test_animation_frames_are_evenly_spaced_iterations_from_the_first_to_the_last():
    assert frame_indices(5) == [0, 1, 2, 3, 4]
    chosen = frame_indices(1000, limit=20)
    assert len(chosen) == 20 and chosen[0] == 0 and chosen[-1] == 999


def test_a_cloud_of_a_million_points_keeps_20000_for_its_picture_and_says_so():
    from types import SimpleNamespace

    from service.plots.fitted import Fitted
    from service.plots.gaussian import draw, picture_data
    from service.plots.style import new_figure

    rng = np.random.default_rng(0)
    X = rng.normal(size=(1_000_000, 2))
    params = {"weights": [0.5, 0.5], "means": [[-1.0, 0.0], [1.0, 0.0]], "covariances": [np.eye(2).tolist()] * 2}
    log_resp = np.log(np.where(X[:, :1] < 0, [[0.9, 0.1]], [[0.1, 0.9]]))
    solution = SimpleNamespace(
        outcome=SimpleNamespace(log_resp=log_resp), params=params, covariance_type="full", labels=None
    )
    data = picture_data(SimpleNamespace(X=X), solution)
    assert data["points"].shape == (20_000, 2) and int(data["n_total"]) == 1_000_000
    np.testing.assert_array_equal(data["labels"], (data["points"][:, 0] >= 0).astype(np.int16))
    figure = new_figure(640, 480)
    draw(figure, Fitted(params, {"covariance_type": "full"}, data))
    assert "showing 20,000 of 1,000,000 points (a random subsample)" in _texts(figure)
