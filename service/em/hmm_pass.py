"""Forward-backward and Viterbi over many sequences at once, in numpy: the blocked layout that makes them fast.

A per-step Python loop over one long sequence costs microseconds a step; compiled libraries (hmmlearn) do
the same step in nanoseconds. So every sequence is cut into blocks of ``L`` steps (its last block padded at
the end) and all blocks of all sequences sit side by side in time-major arrays ``(L, n_blocks, K)``: one
numpy call advances every block by one step, and a pass costs about ``L`` calls, not ``T``.

Blocks of one sequence depend on each other only through the K-vector handed across each boundary. The
forward pass over a block is a product of K x K matrices ``diag(b_s) A diag(b_s+1) ... A diag(b_e)``, so:

1. every chained block's product ``G`` is computed first, batched across blocks (``L`` steps, K^3 each);
2. the products are chained block by block (one step per block of the longest sequence, batched across
   sequences) to get the normalised state distribution entering each block (forward) and the backward
   vector leaving it;
3. the ordinary scaled forward and backward recursions then run inside every block at once.

With ``L`` near sqrt(T) a sequence of 10^6 steps takes a few thousand numpy calls. Many short sequences
are one block each (no chain at all), so 1,000 sequences of 100 steps take 100 batched steps, not 1,000
passes. Viterbi has the same shape in the (max, +) semiring. Padding steps emit with probability 1 (log 0)
and are masked out of every sum; in Viterbi they keep the state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]
BoolArray = NDArray[np.bool_]

# The cost model that picks L (see choose_block_length): seconds per numpy call of one batched step, and per
# padded cell-state of it. Measured on this project's 2-core machine (benchmarks/bench_hmm.py); only their
# ratio matters.
_SECONDS_PER_STEP = 2.5e-5
_SECONDS_PER_CELL = 4e-9
_G_RENORMALISE_EVERY = 8  # block products shrink by ~the emission scale a step: rescale before they underflow


@dataclass(frozen=True)
class BlockLayout:
    """Where every time step of every sequence sits in the (L, n_blocks) arrays, and how blocks chain."""

    block_length: int
    source: IntArray  # (L, n_blocks): index of the step in the concatenated sequences, or 0 on padding
    real: BoolArray  # (L, n_blocks): False on padding
    block_sequence: IntArray  # (n_blocks,): the sequence each block belongs to
    first_blocks: IntArray  # the first block of every sequence, in sequence order
    last_blocks: IntArray  # the last block of every sequence, in sequence order
    # chain[k] = (previous, current): the k+1-th blocks of the sequences that have one, and the blocks before them
    chain: tuple[tuple[IntArray, IntArray], ...]
    chained: IntArray  # blocks of sequences with more than one block (their products G are needed)

    @property
    def n_blocks(self) -> int:
        return int(self.real.shape[1])


def choose_block_length(lengths: IntArray, n_states: int) -> int:
    """The block length that minimises a simple cost: numpy calls (~3 L for the passes, ~2 per block of the
    longest sequence for the chains) against padded cells (short sequences pad up to L; chained blocks cost
    K^3, not K^2, per cell)."""
    longest = int(lengths.max())
    candidates = np.unique(np.clip(np.round(np.geomspace(1, longest, 48)).astype(np.int64), 1, longest))
    values, counts = np.unique(lengths, return_counts=True)
    blocks = np.ceil(values[None, :] / candidates[:, None])  # (candidates, distinct lengths)
    cells = (blocks * candidates[:, None] * counts).sum(axis=1)
    chained_cells = ((blocks > 1) * blocks * candidates[:, None] * counts).sum(axis=1)
    steps = 3 * candidates + 2 * blocks.max(axis=1) * (blocks.max(axis=1) > 1)
    cost = _SECONDS_PER_STEP * steps + _SECONDS_PER_CELL * (n_states**2 * cells + n_states**3 * chained_cells)
    return int(candidates[np.argmin(cost)])


def make_layout(lengths: IntArray, block_length: int) -> BlockLayout:
    lengths = np.asarray(lengths, dtype=np.intp)
    L = block_length
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    n_per_sequence = -(-lengths // L)
    block_sequence = np.repeat(np.arange(len(lengths)), n_per_sequence)
    first_blocks = np.concatenate([[0], np.cumsum(n_per_sequence)[:-1]]).astype(np.intp)
    index_in_sequence = np.arange(len(block_sequence)) - np.repeat(first_blocks, n_per_sequence)
    block_start = offsets[block_sequence] + index_in_sequence * L  # first step of each block
    block_end = offsets[block_sequence] + lengths[block_sequence]  # one past the sequence's last step
    steps = block_start[None, :] + np.arange(L)[:, None]
    real = steps < block_end[None, :]
    source = np.where(real, steps, 0).astype(np.intp)
    chain = tuple(
        (current - 1, current)
        for k in range(1, int(n_per_sequence.max()))
        if len(current := first_blocks[n_per_sequence > k] + k)
    )
    return BlockLayout(
        block_length=L,
        source=source,
        real=real,
        block_sequence=block_sequence.astype(np.intp),
        first_blocks=first_blocks,
        last_blocks=(first_blocks + n_per_sequence - 1).astype(np.intp),
        chain=chain,
        chained=np.flatnonzero(n_per_sequence[block_sequence] > 1).astype(np.intp),
    )


@dataclass
class Posteriors:
    """What one forward-backward pass gives the M-step (sums) and the scorer (per-block log-likelihoods)."""

    block_log_likelihood: FloatArray  # (n_blocks,) sum of log c_t over the block's real steps
    gamma: FloatArray  # (L, K, n_blocks) state posteriors, 0 on padding
    start: FloatArray  # (K,) sum of the posteriors at every sequence's first step
    transitions: FloatArray  # (K, K) expected transition counts (sum over t of xi_t)


def forward_backward(
    layout: BlockLayout, start: FloatArray, transitions: FloatArray, emission: FloatArray, want_xi: bool = True
) -> Posteriors:
    """Scaled forward-backward over every block at once.

    ``emission`` (L, K, n_blocks) holds b_t(k) up to a positive factor per step (the caller keeps the log of
    it), 1 on padding; it is overwritten. States are the middle axis so that a step's sums over states are
    K - 1 additions of contiguous rows and its products (K x K) @ (K x n_blocks) matrix products: measured three
    times faster per step than (n_blocks, K) rows. Returns per-step posteriors and the expected counts the
    M-step needs; a block's log-likelihood is the sum of log c_t, c_t the forward normaliser (the caller adds
    its factors).
    """
    L, K, n_blocks = emission.shape
    A = np.ascontiguousarray(transitions)
    AT = np.ascontiguousarray(transitions.T)
    ones = np.ones(K)
    entering, leaving = _chains(layout, start, A, emission)

    alpha = np.empty(emission.shape)
    scale = np.empty((L, n_blocks))
    np.multiply(entering, emission[0], out=alpha[0])
    for t in range(L):
        if t:
            np.dot(AT, alpha[t - 1], out=alpha[t])
            alpha[t] *= emission[t]
        np.dot(ones, alpha[t], out=scale[t])
        alpha[t] /= scale[t]

    real = layout.real
    with np.errstate(divide="ignore"):  # a zero normaliser is an impossible step: -inf, reported by the caller
        log_scale = np.log(scale, where=real, out=np.zeros_like(scale))
    block_log_likelihood = log_scale.sum(axis=0)

    # The standard scaled backward recursion, beta_t = A (b_t+1 beta_t+1 / c_t+1), with b / c taken at once.
    weighted = emission
    weighted /= scale[:, None, :]
    beta = np.empty(emission.shape)
    beta[L - 1] = leaving
    weighted[L - 1] *= leaving
    for t in range(L - 2, -1, -1):
        np.dot(A, weighted[t + 1], out=beta[t])
        weighted[t] *= beta[t]
    # gamma_t = alpha_t beta_t / n_t, n_t its sum; xi_t(i, j) = alpha_t(i) A(i, j) weighted_t+1(j) / n_t+1 (the
    # same n: the sum of xi_t over i, j is that of alpha_t+1 beta_t+1). So the scale of beta never matters.
    gamma = np.multiply(alpha, beta, out=beta)
    norm = gamma.sum(axis=1)
    norm[~real] = 1.0
    gamma /= norm[:, None, :]
    weighted /= norm[:, None, :]
    padding = ~real[:, None, :].repeat(K, axis=1)
    gamma[padding] = 0.0
    weighted[padding] = 0.0

    xi = np.zeros((K, K))
    if want_xi:
        if L > 1:
            xi += np.tensordot(alpha[:-1], weighted[1:], axes=([0, 2], [0, 2]))
        for previous, current in layout.chain:
            xi += alpha[L - 1][:, previous] @ weighted[0][:, current].T
        xi *= A
    return Posteriors(
        block_log_likelihood=block_log_likelihood,
        gamma=gamma,
        start=gamma[0][:, layout.first_blocks].sum(axis=1),
        transitions=xi,
    )


def _chains(
    layout: BlockLayout, start: FloatArray, A: FloatArray, emission: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """(K, n_blocks) each: the normalised state distribution entering every block, and the backward vector
    (up to scale) at every block's last step, handed along each sequence's blocks through their products."""
    _, K, n_blocks = emission.shape
    entering = np.empty((n_blocks, K))
    entering[layout.first_blocks] = start
    leaving = np.ones((n_blocks, K))
    if layout.chain:
        G = _block_products(emission[:, :, layout.chained], A)  # (n_chained, K, K)
        position = np.full(n_blocks, -1, dtype=np.intp)
        position[layout.chained] = np.arange(len(layout.chained))
        single = all(len(current) == 1 for _, current in layout.chain)
        for previous, current in layout.chain:  # forward: hand the distribution across each boundary
            if single:  # one long sequence: plain vectors, no batched products of one matrix
                p, c = int(previous[0]), int(current[0])
                ending = entering[p] @ G[position[p]]
                entering[c] = (ending / ending.sum()) @ A
                continue
            ending = np.matmul(entering[previous][:, None, :], G[position[previous]])[:, 0, :]
            entering[current] = (ending / ending.sum(axis=1, keepdims=True)) @ A
        for previous, current in reversed(layout.chain):  # backward: the same products, the other way
            if single:
                p, c = int(previous[0]), int(current[0])
                back = A @ (G[position[c]] @ leaving[c])
                leaving[p] = back / back.sum()
                continue
            back = np.matmul(G[position[current]], leaving[current][:, :, None])[:, :, 0] @ A.T
            leaving[previous] = back / back.sum(axis=1, keepdims=True)
    return entering.T, leaving.T


def _block_products(emission: FloatArray, A: FloatArray) -> FloatArray:
    """(n, K, K) products diag(b_s) A diag(b_s+1) ... A diag(b_e) of the given blocks ((L, K, n) emissions),
    each up to a positive factor (the chains normalise what they hand on)."""
    L, K, n = emission.shape
    AT = np.ascontiguousarray(A.T)
    G = np.zeros((K, K, n))  # G[i] is row i of every block's product, (K, n): a product step is K small gemms
    G[np.arange(K), np.arange(K)] = emission[0]
    for t in range(1, L):
        G = np.matmul(AT, G)
        G *= emission[t]
        if t % _G_RENORMALISE_EVERY == 0:
            G /= G.max(axis=(0, 1))
    return np.ascontiguousarray(G.transpose(2, 0, 1))


def viterbi(
    layout: BlockLayout, log_start: FloatArray, log_transitions: FloatArray, log_emission: FloatArray
) -> NDArray[np.intp]:
    """The most probable state path, (L, n_blocks) in the layout's places (padding: anything).

    ``log_emission`` (L, n_blocks, K) is log b_t(k) up to an additive constant per step; -inf is allowed.
    """
    L, n_blocks, K = log_emission.shape
    logA, real = log_transitions, layout.real
    entering = np.empty((n_blocks, K))  # best log-score of a path into each block's first state, before emitting
    entering[layout.first_blocks] = log_start
    H = None
    position = np.full(n_blocks, -1, dtype=np.intp)
    if layout.chain:
        H = _best_block_paths(log_emission[:, layout.chained], real[:, layout.chained], logA)
        position[layout.chained] = np.arange(len(layout.chained))
        for previous, current in layout.chain:
            ending = np.max(entering[previous][:, :, None] + H[position[previous]], axis=1)
            entering[current] = np.max(ending[:, :, None] + logA, axis=1)

    # Within every block at once, from the scores entering it: delta and back-pointers.
    pointer_type = np.uint8 if K <= 256 else np.uint16
    pointers = np.zeros((L, n_blocks, K), dtype=pointer_type)
    delta = entering + log_emission[0]
    keep = np.arange(K, dtype=pointer_type)
    for t in range(1, L):
        scores = delta[:, :, None] + logA
        best = np.argmax(scores, axis=1)
        step = np.take_along_axis(scores, best[:, None, :], axis=1)[:, 0, :] + log_emission[t]
        live = real[t]
        pointers[t] = np.where(live[:, None], best, keep)
        delta = np.where(live[:, None], step, delta)
    deltas_at_end = delta

    # Each block's end state: the last block's from its own scores, earlier ones back along the chain.
    end_state = np.empty(n_blocks, dtype=np.intp)
    end_state[layout.last_blocks] = np.argmax(deltas_at_end[layout.last_blocks], axis=1)
    if H is not None:
        for previous, current in reversed(layout.chain):
            z = end_state[current]
            entry = np.argmax(entering[current] + H[position[current], :, z], axis=1)
            end_state[previous] = np.argmax(deltas_at_end[previous] + logA[:, entry].T, axis=1)

    path = np.empty((L, n_blocks), dtype=np.intp)
    path[L - 1] = end_state
    columns = np.arange(n_blocks)
    for t in range(L - 1, 0, -1):
        path[t - 1] = pointers[t, columns, path[t]]
    return path


def _best_block_paths(log_emission: FloatArray, real: BoolArray, logA: FloatArray) -> FloatArray:
    """(n, K, K): the best log-score of a path through each block from state i at its first step to state k at
    its last real step (the (max, +) analogue of the block products)."""
    L, n, K = log_emission.shape
    H = np.full((n, K, K), -np.inf)
    H[:, np.arange(K), np.arange(K)] = log_emission[0]
    for t in range(1, L):
        step = np.max(H[:, :, :, None] + logA, axis=2) + log_emission[t][:, None, :]
        live = real[t]
        H = np.where(live[:, None, None], step, H)
    return H
