"""Token selection on the device: greedy, and seeded draws whose stream belongs to one row only."""

from __future__ import annotations

import pytest
import torch

from selfensemble.engine.sampling import (
    NUCLEUS_CANDIDATES,
    race_uniforms,
    sample_keys,
    select_token,
    select_tokens,
)


def test_greedy_is_argmax():
    logp = torch.log_softmax(torch.tensor([0.1, 2.0, -1.0, 1.9]), 0)
    assert select_token(logp, do_sample=False) == 1
    # sampling knobs are ignored when greedy
    assert select_token(logp, False, temperature=5.0, top_p=0.1, top_k=3) == 1


def test_sampling_reproducible_and_seed_dependent():
    logp = torch.log_softmax(torch.randn(100, generator=torch.Generator().manual_seed(3)), 0)

    def draw(seed):
        return [select_token(logp, True, temperature=2.0, seed=seed, step=t) for t in range(30)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)
    assert len(set(draw(7))) > 5  # really sampling at temperature 2 over 100 tokens


def test_top_k_1_is_greedy():
    logp = torch.log_softmax(torch.randn(100, generator=torch.Generator().manual_seed(4)), 0)
    picks = {select_token(logp, True, temperature=10.0, top_k=1, step=t) for t in range(50)}
    assert picks == {int(logp.argmax())}


def test_top_k_and_top_p_restrict_support():
    logp = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert {select_token(logp, True, top_k=2, step=t) for t in range(200)} == {0, 1}
    # top_p = 0.6: keep 0 (.5) and the token that crosses .6 (1), never 2 or 3
    assert {select_token(logp, True, top_p=0.6, step=t) for t in range(200)} == {0, 1}
    # top_p = 0.4: token 0 alone already crosses it
    assert {select_token(logp, True, top_p=0.4, step=t) for t in range(50)} == {0}


def test_zero_probability_tokens_are_never_drawn():
    logp = torch.log(torch.tensor([0.0, 0.5, 0.0, 0.5, 0.0]))
    assert {select_token(logp, True, seed=s, step=t) for s in range(5) for t in range(100)} == {1, 3}


def test_sampling_frequencies_follow_the_distribution():
    logp = torch.log(torch.tensor([0.7, 0.2, 0.1]))
    draws = [select_token(logp, True, seed=5, step=t) for t in range(4000)]
    freq = [draws.count(i) / len(draws) for i in range(3)]
    assert freq == pytest.approx([0.7, 0.2, 0.1], abs=0.03)


def test_the_uniforms_are_pinned():
    """The stream's numbers, fixed: a change here changes every sampled answer, so the caches that
    store sampled outputs (paraphrase.cache.SAMPLER_VERSION, confidence.SAMPLER_VERSION) must be bumped."""
    keys = sample_keys([0, 1, 2**40 + 3, 2**63 - 1])
    assert race_uniforms(keys, 0, 3)[:, 1].tolist() == pytest.approx(
        [0.1750679612159729, 0.22732633352279663, 0.4629959464073181, 0.44539588689804077], abs=1e-7)
    assert race_uniforms(keys, 7, torch.tensor([[5, 49151]] * 4)).flatten().tolist() == pytest.approx(
        [0.7008673548698425, 0.5989544987678528, 0.21975821256637573, 0.4706428647041321, 0.20895403623580933,
         0.16377753019332886, 0.5094075798988342, 0.12014168500900269], abs=1e-7)


def test_no_uniform_is_0_or_1():
    """-log(u) must be finite and > 0 for every token, or a p = 0 token could win the race (0 / 0)."""
    u = race_uniforms(sample_keys(range(64)), 0, 1 << 16)
    assert float(u.min()) > 0 and float(u.max()) < 1


def test_a_tokens_number_is_the_same_in_the_vocabulary_and_among_candidates():
    """The race over a nucleus's candidates uses each token's own number, as the race over every token does."""
    keys = sample_keys([3, 4])
    full = race_uniforms(keys, 5, 1000)
    ids = torch.tensor([[7, 999, 0], [500, 1, 2]])
    assert torch.equal(race_uniforms(keys, 5, ids), full.gather(1, ids))


def test_uniforms_look_uniform():
    u = torch.cat([race_uniforms(sample_keys(range(50)), t, 40).flatten() for t in range(100)])
    assert float(u.min()) > 0 and float(u.max()) < 1
    assert float(u.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(u.var()) == pytest.approx(1 / 12, abs=0.005)
    counts = torch.histc(u, bins=10, min=0, max=1)
    assert float(counts.min()) > 0.9 * len(u) / 10


def test_top_p_candidates_race_draws_what_the_full_race_draws():
    """With top_p < 1 the race runs over the nucleus's candidates; the pick equals racing every token."""
    logp = torch.log_softmax(torch.randn(6, 3000, generator=torch.Generator().manual_seed(2)) * 3, -1)
    keys = sample_keys(range(6))
    for step in range(40):
        got = select_tokens(logp, True, top_p=0.8, keys=keys, step=step)
        probs = torch.softmax(logp, -1)
        top, order = torch.topk(probs, 3000, dim=-1)
        keep = torch.zeros_like(probs, dtype=torch.bool).scatter_(1, order, top.cumsum(-1) - top <= 0.8)
        race = -torch.log(race_uniforms(keys, step, 3000))
        assert got.tolist() == torch.argmax(probs * keep / race, dim=-1).tolist()


def test_long_nucleus_is_the_full_sorts():
    """A flat distribution whose nucleus is longer than the partial sort looks at: the kept set is
    still exactly the full sort's (tokens past it are never drawn, tokens past the partial sort are)."""
    vocab = 2000
    logp = torch.log_softmax(-torch.arange(vocab, dtype=torch.float) * 1e-3, 0)  # decreasing, nearly flat
    p = logp.exp()
    nucleus = int(((p.cumsum(0) - p) <= 0.5).sum())  # the reference: full sort, keep the crossing token
    assert nucleus > NUCLEUS_CANDIDATES
    keys = sample_keys(range(40))
    draws = [int(t) for s in range(100) for t in select_tokens(logp.expand(40, vocab), True, top_p=0.5,
                                                              keys=keys, step=s)]
    assert max(draws) < nucleus and max(draws) > NUCLEUS_CANDIDATES


def test_bad_temperature_and_keys():
    with pytest.raises(ValueError, match="temperature"):
        select_token(torch.zeros(3), True, temperature=0.0)
    with pytest.raises(ValueError, match="keys"):
        select_tokens(torch.zeros(2, 3), True, keys=sample_keys([1]))
