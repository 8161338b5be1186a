"""The claims get definite verdicts: supported where an effect is planted, refuted by an equivalence test where a
null is planted with a tight spread, untestable where the exact test cannot reach its Holm level, inconclusive where
a small sample cannot tell; claims 4a-c compare siblings of one parent and claim 2 reads selectivity against the
models that see only the input; every tested claim states the exact power of its test."""
import numpy as np
import pandas as pd
import pytest

from analysis.claims import PROBE, ClaimResult, evaluate_claims, judge, siblings
from analysis.load import load_study
from analysis.measures import LARGE, SMALL_MEDIUM
from analysis.stats import holm, paired_test, seed_series
from analysis.taxonomy import counted, taxonomy
from synthetic_store import Plant, write_store

LRS = ("small", "medium", "large")


def _evidence(tmp_path, plant, seed=0, name="run"):
    return taxonomy(load_study(write_store(tmp_path / name, plant, seed))).evidence


def _claims(tmp_path, plant, seed=0, name="run"):
    return {c.id: c for c in evaluate_claims(_evidence(tmp_path, plant, seed, name))}


def test_a_planted_effect_is_supported_with_its_power(tmp_path):
    plant = Plant(seeds=10, priors=("high",), lrs=LRS, spurious=(0.0,),
                  kind=lambda lr, prior, s: "overwrite" if lr == "large" else "wrapper")
    claims = _claims(tmp_path, plant)
    assert {i: c.verdict for i, c in claims.items()} == {i: "supported" for i in ("1", "2", "3", "4a", "4b", "4c")}
    assert claims["1"].test.effect > 0.4 and claims["1"].test.rank_biserial == 1.0
    assert claims["1"].power_text == ("power 1.00 to detect +0.05 accuracy at its Holm level 0.05 / 6 = 0.00833 (10 "
                                      "seeds, 10 non-zero; exact, given the observed |values|)")
    assert claims["3"].effect_text.startswith("x") and "log-rank reFT vs control" in claims["3"].detail
    # Every claim's p is 2^-10: tied, they share Holm's first step (none can pass unless the first does).
    assert {c.level for c in claims.values()} == {0.05 / 6}
    assert claims["4a"].detail.startswith("20 pairs of siblings over 10 seeds")  # small and medium, each vs large


def test_a_planted_null_with_a_tight_spread_is_refuted_by_the_equivalence_test(tmp_path):
    plant = Plant(seeds=10, priors=("high",), lrs=LRS, spurious=(0.0,), kind=lambda *a: "overwrite")
    claims = _claims(tmp_path, plant)
    equivalence, _ = holm([c.equivalence.p for c in claims.values()])
    for i, p in zip(claims, equivalence):
        assert claims[i].p_equivalence_holm == p  # Holm over the claims' equivalence tests
    for i in ("1", "2", "3", "4a", "4b"):
        assert claims[i].verdict == "refuted", (i, claims[i].verdict, claims[i].p_equivalence_holm)
        assert claims[i].p_equivalence_holm < 0.05 and "below the SESOI" in claims[i].detail
    # Siblings that both never revive within the budget differ by exactly 0 on every seed: nothing to test.
    assert claims["4c"].verdict == "untestable at this n (0 non-zero of 10)" and claims["4c"].power == 0


def _judged(values, sesoi=0.05, level=0.05):
    """A claim on `values` judged at one Holm step: p(Holm) = p / level x alpha (the step's adjustment)."""
    values = pd.Series(values, dtype=float)
    result = ClaimResult("x", "a claim", "a measure", sesoi, f"{sesoi:+g}", paired_test(values), values,
                         paired_test(sesoi - values))
    result.level = level
    result.p_holm = min(1.0, result.test.p * 0.05 / level)
    result.p_equivalence_holm = min(1.0, result.equivalence.p * 0.05 / level)
    judge(result, alpha=0.05)
    return result


def test_a_claim_whose_exact_test_cannot_reach_its_holm_level_is_untestable_at_this_n():
    half_zero = [0.0] * 6 + [0.2, 0.3, 0.25, 0.1, 0.35, 0.15]
    first = _judged(half_zero, level=0.05 / 6)  # 2^-6 = 0.0156 is not below 0.05 / 6
    assert first.verdict == "untestable at this n (6 non-zero of 12)" and first.power == 0
    assert "the smallest p the exact test can give, 0.0156, is not below the level of its Holm step, 0.05 / 6 = " \
           "0.00833" in first.power_text
    last = _judged(half_zero, level=0.05)  # the same values at Holm's last step can reject
    assert last.verdict == "supported" and last.power > 0
    four = _judged([0.3, 0.32, 0.29, 0.31])  # 4 seeds: 2^-4 = 0.0625 even at 0.05
    assert four.verdict == "untestable at this n (4 non-zero of 4)"


def test_the_equivalence_test_refutes_a_clear_null_at_enough_seeds_and_is_inconclusive_at_too_few():
    below = [0.005, 0.06, -0.03, 0.02, 0.01]  # mean +0.013 against a SESOI of +0.05
    few = _judged(below)
    assert few.verdict == "inconclusive" and few.equivalence.p == 2 / 32  # one of 5 above the SESOI: p 0.0625
    assert _judged(below * 3).verdict == "refuted"
    assert _judged([0.30, 0.32, 0.29, 0.31, 0.33, 0.30]).verdict == "supported"
    positive_but_small = _judged([0.01, 0.012, 0.008, 0.011, 0.009, 0.013])
    assert positive_but_small.verdict == "supported" and "positive but below the SESOI" in positive_but_small.detail


def test_claims_say_why_they_are_not_tested(tmp_path):
    plant = Plant(seeds=3, priors=("high",), lrs=("medium",), spurious=(0.0,), kind=lambda *a: "no-op")
    claims = _claims(tmp_path, plant)
    assert claims["1"].verdict == "not tested (fine-tuning did not learn C_FT at small/medium LR: no member to test)"
    assert claims["4a"].verdict == "not tested (fine-tuning did not learn C_FT at small/medium LR: no member to test)"
    kept = _claims(tmp_path, Plant(seeds=3, priors=("high",), lrs=("medium", "large"), spurious=(0.0,),
                                   kind=lambda *a: "kept"), name="kept")
    assert kept["1"].verdict == "not tested (fine-tuning at small/medium LR suppressed C_PT in no member: nothing to " \
                                "revive)"
    # The probe claim, like the other two, reads suppressed members only: a kept C_PT is readable trivially.
    assert kept["2"].verdict == kept["1"].verdict


@pytest.mark.slow
def test_claims_keep_their_error_rate_over_null_stores(tmp_path):
    """Every claim is false in a store whose overwrites prune and revive like the nulls; Holm keeps the chance of
    any supported claim per store at or below alpha = 0.05, so 3 or more of 12 would happen with probability
    < 2% if that held."""
    plant = Plant(seeds=8, priors=("high",), lrs=("medium", "large"), spurious=(0.0,), null_like=True,
                  kind=lambda *a: "overwrite")
    false = sum(any(c.verdict == "supported" for c in _claims(tmp_path, plant, seed, f"null{seed}").values())
                for seed in range(12))
    assert false <= 2


def test_the_weakening_pairs_siblings_of_one_parent_not_unpaired_group_means(tmp_path):
    """A parent-level effect with no LR effect: high-prior parents give +0.6 pruning excess to every child, low-prior
    parents +0.1. At the medium LR only high-prior children are suppressed (low-prior ones keep C_PT), at the large
    LR both are. Unpaired seed means compare +0.6 with +0.35 and find a weakening; siblings differ by ~0."""
    plant = Plant(seeds=8, priors=("high", "low"), lrs=("medium", "large"), spurious=(0.0,),
                  kind=lambda lr, prior, s: "kept" if (lr, prior) == ("medium", "low") else "wrapper")
    evidence = _evidence(tmp_path, plant)
    noise = np.random.default_rng(0).normal(0, 0.01, len(evidence))
    evidence = evidence.assign(prune_random_gain=0.0,
                               prune_gain=np.where(evidence.prior_label == "high", 0.6, 0.1) + noise)
    evidence = evidence.assign(prune_excess=evidence.prune_gain)
    suppressed = counted(evidence)
    suppressed = suppressed[suppressed.suppressed == 1]
    unpaired = (seed_series(suppressed[suppressed.lr_regime == SMALL_MEDIUM], "prune_excess") -
                seed_series(suppressed[suppressed.lr_regime == LARGE], "prune_excess"))
    assert np.allclose(unpaired, 0.6 - 0.35, atol=0.02)
    claim = {c.id: c for c in evaluate_claims(evidence)}["4a"]
    assert abs(claim.test.effect) < 0.02 and claim.verdict == "refuted"
    assert claim.detail.startswith("8 pairs of siblings over 8 seeds")  # one high-prior pair per seed
    assert np.allclose(claim.values, 0.0, atol=0.05)  # the unpaired 0.25 came from the low-prior parents


def test_siblings_match_parent_and_c_tr(tmp_path):
    plant = Plant(seeds=2, priors=("high",), lrs=("medium", "large"), spurious=(0.0, 1.0),
                  kind=lambda *a: "wrapper")
    evidence = _evidence(tmp_path, plant).pipe(lambda e: e.assign(
        probe_excess=e.sel_finetuned - np.maximum(e.sel_control, e.sel_init)))
    pairs = siblings(evidence, PROBE)
    assert len(pairs) == 4 and set(pairs.seed) == {0, 1}  # per seed: one parent x two C_Tr, not 2 x 2
    medium = evidence[evidence.lr_regime == SMALL_MEDIUM].set_index(["pretrained", "spurious"]).probe_excess
    large = evidence[evidence.lr_regime == LARGE].set_index(["pretrained", "spurious"]).probe_excess
    np.testing.assert_allclose(np.sort(pairs.difference), np.sort((medium - large).to_numpy()))


def test_claim_2_reads_selectivity_against_the_control_and_the_untrained_model(tmp_path):
    """The fine-tuned members keep their parent's selectivity (a comparison with 0.9 x the parent would
    pass), but where a model that sees only the input reads as much, claim 2 is refuted: either null alone does."""
    plant = Plant(seeds=10, priors=("high",), lrs=("medium",), spurious=(0.0,), kind=lambda *a: "wrapper")
    evidence = _evidence(tmp_path, plant)
    assert (evidence.sel_finetuned > 0.9 * evidence.sel_pretrained).all()
    assert {c.id: c for c in evaluate_claims(evidence)}["2"].verdict == "supported"
    rng = np.random.default_rng(1)
    as_much = evidence.sel_finetuned + rng.normal(0, 0.01, len(evidence))
    for null in ("sel_control", "sel_init"):
        claim = {c.id: c for c in evaluate_claims(evidence.assign(**{null: as_much}))}["2"]
        assert claim.verdict == "refuted" and abs(claim.test.effect) < 0.02, null
        assert "the pretrained parent" in claim.detail and "untrained" in claim.detail


def test_claims_without_their_data_are_reported_as_not_tested(tmp_path):
    plant = Plant(seeds=4, priors=("high",), lrs=("medium",), spurious=(0.0,), kind=lambda *a: "reft-only",
                  phases=("pretrain", "finetune", "reft", "control_pretrain", "control_reft", "regime"))
    claims = {i: c.verdict for i, c in _claims(tmp_path, plant).items()}
    assert claims["1"] == "not tested (no prune results for small/medium-LR members)"
    assert claims["2"] == ("not tested (no probe selectivity (fine-tuned, control and untrained) results for "
                           "small/medium-LR members)")
    assert not claims["3"].startswith("not tested")  # reFT and its control are in the store
    assert claims["4a"] == "not tested (no prune results for small/medium-LR members)"
    assert claims["4c"] == "not tested (no fine-tuned members at large LR)"


def test_an_empty_fine_tuning_phase_gives_verdicts_not_a_crash(tmp_path):
    from synthetic_store import build_frame
    plant = Plant(seeds=2, priors=("high",), lrs=("medium",), spurious=(0.0,))
    frame = build_frame(plant)
    study = load_study(write_store(tmp_path / "run", plant, frame=frame[frame.phase == "pretrain"],
                                   status="running"))
    evidence = taxonomy(study).evidence
    assert evidence.empty
    assert all(c.verdict.startswith("not tested (no fine-tuned members") for c in evaluate_claims(evidence))
