"""Per-call set-up of the linearized simulator: the cache of validated families.

``simlab.dynamics.linearized`` keeps the validated families of recent calls
(bit-for-bit copies of the inputs) so that a loop of ``linearized`` calls on
the same Hessians sets them up once. These tests check that the cache never
changes a result: a cached call equals an uncached one bit for bit, an array
mutated in place between calls is seen as new, and copies, views and other
memory layouts of the same numbers give the same result. Deterministic
(fixed seeds, exact equality).
"""

import numpy as np
import pytest

from simlab.curvature import coherence_dial
from simlab.dynamics import linearized as lin
from simlab.simulate import linearized

RUN = dict(steps=60, trajectories=3, seed=4)


def _fields(res):
    return (res.escape_step, res.lyapunov, res.log_sq_norm, res.direction,
            np.array(res.ms_growth))


def _assert_same(a, b):
    for x, y in zip(_fields(a), _fields(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture
def empty_cache(monkeypatch):
    monkeypatch.setattr(lin, "_CACHE", type(lin._CACHE)())
    return lin._CACHE


def test_cached_call_equals_uncached(empty_cache, monkeypatch):
    G = np.random.default_rng(0).standard_normal((9, 5))
    first = linearized(G, 0.3, 2, **RUN)
    assert len(empty_cache) == 1
    again = linearized(G, 0.3, 2, **RUN)
    _assert_same(first, again)
    monkeypatch.setattr(lin, "_CACHE_BYTES", 0)      # nothing is cached
    uncached = linearized(G, 0.3, 2, **RUN)
    _assert_same(first, uncached)


def test_in_place_mutation_is_a_new_family(empty_cache):
    G = np.random.default_rng(1).standard_normal((8, 6))
    before = linearized(G, 0.4, 3, **RUN)
    G[2] *= 3.0                                       # same object, new numbers
    after = linearized(G, 0.4, 3, **RUN)
    fresh = linearized(G.copy(), 0.4, 3, **RUN)
    _assert_same(after, fresh)
    assert not np.array_equal(before.log_sq_norm, after.log_sq_norm)
    G[2] = -0.0 * G[2]                                # signed zeros differ in bits
    _assert_same(linearized(G, 0.4, 3, **RUN), linearized(G.copy(), 0.4, 3, **RUN))


def test_layouts_and_forget_set(empty_cache):
    H = coherence_dial(12, 4)
    kw = dict(forget=H[:5], forget_batch=2, alpha=0.2, **RUN)
    ref = linearized(H.copy(), 0.5, 3, **kw)
    _assert_same(ref, linearized(np.asfortranarray(H), 0.5, 3, **kw))
    _assert_same(ref, linearized(H.tolist(), 0.5, 3, **kw))      # not cached
    wide = np.zeros((12, 2 * H.shape[1]))
    wide[:, ::2] = H
    _assert_same(ref, linearized(wide[:, ::2], 0.5, 3, **kw))    # strided view
    # Another forget set with the same retain set is another family.
    other = linearized(H, 0.5, 3, **{**kw, "forget": H[5:10]})
    assert not np.array_equal(ref.log_sq_norm, other.log_sq_norm)


def test_cache_is_bounded(empty_cache):
    for k in range(lin._CACHE_ENTRIES + 5):
        linearized(coherence_dial(6 + k, 2), 0.5, 2, steps=5, trajectories=1)
    assert len(empty_cache) == lin._CACHE_ENTRIES


def test_ms_growth_of_a_chunk_equals_per_cell():
    """The vectorized growth estimate of a chunk equals the per-cell one bit
    for bit, for regular cells and for cells with stopped or zero
    trajectories (NaN / -inf records)."""
    rng = np.random.default_rng(7)
    T, n_rec, cells = 4, 21, 9
    steps = np.arange(n_rec) * 5
    rec = np.cumsum(rng.standard_normal((cells * T, n_rec)), axis=1)
    rec[:, 0] = 0.0
    lyap = rec[:, -1] / (2 * steps[-1])
    rec[5, 12:] = np.nan                      # cell 1: a stopped trajectory
    rec[9, 7] = -np.inf                       # cell 2: a trajectory became zero
    rec[9, 8:] = np.nan
    lyap[9] = -np.inf
    rec[12:16, 3:] = -np.inf                  # cell 3: all zero from step 3
    rec[12:16, 4:] = np.nan
    lyap[12:16] = -np.inf
    got = lin._ms_growth_many(rec, lyap, steps, T)
    want = [lin._ms_growth(rec[k * T:(k + 1) * T], lyap[k * T:(k + 1) * T], steps)
            for k in range(cells)]
    np.testing.assert_array_equal(got, want)
    assert np.isfinite(got[[0, 4, 8]]).all()
    np.testing.assert_array_equal(lin._ms_growth_many(rec[:T], lyap[:T], steps, T),
                                  want[:1])


def test_chunked_pipeline_equals_one_chunk(monkeypatch):
    """Several chunks (the driver of one in a helper thread while the host
    prepares the next and assembles the previous) give the results of one
    chunk bit for bit, in order."""
    cfgs = [dict(retain=coherence_dial(30, s), eta=0.5, batch=B, scheme="without")
            for s in (1, 5, 30) for B in (1, 4, 30)]
    cfgs.append(dict(retain=coherence_dial(30, 5), forget=coherence_dial(30, 5),
                     alpha=0.3, eta=0.5, batch=3))
    one = lin.linearized_grid(cfgs, steps=150, trajectories=6, seed=2)
    monkeypatch.setattr(lin, "_CHUNK_PAIRS", 12)            # two cells a chunk
    many = lin.linearized_grid(cfgs, steps=150, trajectories=6, seed=2)
    for a, b in zip(one, many, strict=True):
        for x, y in zip(_fields(a), _fields(b), strict=True):
            np.testing.assert_array_equal(x, y)
        assert a.params == b.params


def test_result_types():
    """``ms_growth`` is a Python float in grid and single results alike."""
    cfg = dict(retain=coherence_dial(8, 3), eta=0.5, batch=2)
    for res in (linearized(**cfg, **RUN), *lin.linearized_grid([cfg, cfg], steps=40)):
        assert type(res.ms_growth) is float
        assert type(res.seed) is int


def test_vectorized_seeding_equals_numpy():
    """The chunk-wide generator states equal NumPy's ``SeedSequence`` and
    ``default_rng`` seed by seed, bit for bit (both words of the xoshiro
    states and the PCG64 state), including the edge seeds 0 and 2**32 - 1;
    a seed >= 2**32 takes NumPy's own route with the same result."""
    seeds = [0, 1, 2**32 - 1, *np.random.SeedSequence(5).generate_state(200).tolist()]
    states, pcg = lin._seeded_streams(seeds, 3)
    want = np.concatenate([lin._rng_states(s, 3) for s in seeds])
    np.testing.assert_array_equal(states, want)
    reuse = np.random.Generator(np.random.PCG64(0))
    for s, st in zip(seeds, pcg, strict=True):
        got = lin._generator(s, st, reuse).standard_normal(7)
        np.testing.assert_array_equal(got, np.random.default_rng(s).standard_normal(7))
    big, pcg_big = lin._seeded_streams([2**40 + 3, 7], 2)
    assert pcg_big == [None, None]
    np.testing.assert_array_equal(big[:2], lin._rng_states(2**40 + 3, 2))
    # fewer than _FAST_SEEDING_MIN seeds (one linearized call) take NumPy's route
    few = seeds[:lin._FAST_SEEDING_MIN - 1]
    small, pcg_small = lin._seeded_streams(few, 3)
    assert pcg_small == [None] * len(few)
    np.testing.assert_array_equal(small, want[:3 * len(few)])
    # the raw SeedSequence state of several entropy words
    ent = np.random.default_rng(1).integers(0, 2**32, (50, 7), dtype=np.uint32)
    np.testing.assert_array_equal(
        lin._ss_states(ent, 5),
        [np.random.SeedSequence(row.tolist()).generate_state(5, np.uint64)
         for row in ent])


def test_chunk_inputs_equal_per_cell():
    """The chunk-wide initial directions (families of different widths, with
    and without a basis of U, perturbation samples) equal the per-cell
    ``_initial_directions`` row for row, bit for bit."""
    rng = np.random.default_rng(3)
    G = rng.standard_normal((6, 9))
    cfgs = [dict(retain=coherence_dial(12, s), eta=0.5, batch=2) for s in (1, 4, 12)]
    cfgs += [dict(retain=G, eta=0.1, batch=3),
             dict(retain=G[:, :4] @ rng.standard_normal((4, 9)), eta=0.1, batch=2,
                  perturbation_samples=rng.standard_normal((3, 9)))]
    shared = {}
    cells = [lin._prepare_cell(**c, shared=shared) for c in cfgs]
    seeds = [11, 0, 2**32 - 1, 5, 2**35]
    run = lin._check_run(10, 4, 1e3, 1, False)
    w = lin._chunk_inputs(range(len(cells)), cells, seeds, run, None)
    for k, (cell, seed) in enumerate(zip(cells, seeds, strict=True)):
        d0 = lin._initial_directions(cell, 4, seed)
        np.testing.assert_array_equal(w["delta"][4 * k:4 * k + 4, :d0.shape[1]], d0)
        assert not w["delta"][4 * k:4 * k + 4, d0.shape[1]:].any()
        np.testing.assert_array_equal(w["states"][4 * k:4 * k + 4],
                                      lin._rng_states(seed, 4))


def test_invalid_configuration_in_a_later_chunk_raises(monkeypatch):
    """Chunks are packed while the previous chunk simulates, but every
    configuration is checked first: an invalid one in the last chunk raises
    its ValueError before any chunk has run (no finished work is thrown away)."""
    monkeypatch.setattr(lin, "_CHUNK_PAIRS", 4)                 # two cells a chunk
    launched = []
    monkeypatch.setattr(lin, "_launch", lambda *a: launched.append(a))
    good = [dict(retain=coherence_dial(10, s), eta=0.5, batch=2) for s in (1, 2, 5)]
    bad = [dict(retain=coherence_dial(10, 2), eta=-1.0, batch=2),
           dict(retain=coherence_dial(10, 2), eta=0.5, batch=11),
           dict(retain=np.zeros((10, 3)), eta=0.5, batch=2)]
    for cfg, match in zip(bad, ["eta", "batch", "all active Hessians are zero"],
                          strict=True):
        with pytest.raises(ValueError, match=match):
            lin.linearized_grid([*good, cfg], steps=20, trajectories=2)
    assert not launched
