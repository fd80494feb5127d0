"""The groundtruth effect at toy scale, decided by the recipe's own evidence code, and that
code itself: paired differences (SE = sd/√n), the AIS caveats and the verdicts.

Toy truth: 4 Gaussian components N(x; μ_z, σ²I) in 2-D indexed by a 2-bit code z with a
uniform prior — the decoder family (one free centre per code, σ fixed or learned) contains
the truth, and log p(x) is exact by enumerating the 4 codes (so the "AIS" difference is exact
and its error bound 0). The encoder is factorised over the bits, so the ELBO is not tight
at the truth unless the centres form a rectangle. As in `vaelab run groundtruth`: the
encoder is fitted by the ELBO with the decoder frozen at the truth (the reference ELBO),
then encoder and decoder are trained by the ELBO on fresh draws of the truth; the held-out
examples are the same for every decoder."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from vaelab.distributions import FactorisedBernoulli, GaussianLikelihood, UniformBernoulli
from vaelab.errors import VaelabError
from vaelab.estimators.exact import exact, exact_log_likelihood
from vaelab.evaluation.verdicts import normal_interval
from vaelab.experiments.groundtruth import (
    DECODERS,
    MIN_AIS_EXAMPLES,
    NO_EFFECT,
    ais_bound,
    ais_caveat,
    claims,
    decide,
    differences,
    paired_difference,
    reproduced,
    summary_differences,
)
from vaelab.models import VAE
from vaelab.networks.blocks import BlockNetwork, mlp_blocks


class CodeCentres(nn.Module):
    """Decoder mean: one free centre per 2-bit code (state 2·z1 + z2)."""

    def __init__(self, centres: torch.Tensor):
        super().__init__()
        self.centres = nn.Parameter(centres.clone())

    def forward(self, z, condition=None):
        return self.centres[(2 * z[..., 0] + z[..., 1]).long()].view(*z.shape[:-1], 1, 1, 2)


def toy_vae(centres, sigma: float, sigma_mode: str) -> VAE:
    encoder = BlockNetwork([nn.Flatten(), *mlp_blocks([2, 32, 32])], nn.Linear(32, 2))
    likelihood = GaussianLikelihood((1, 1, 2), sigma_mode=sigma_mode, sigma=sigma)
    return VAE(encoder, CodeCentres(centres), FactorisedBernoulli, likelihood,
               UniformBernoulli(2), estimator=exact)  # fmt: skip


def draws(centres, sigma: float, n: int, g: torch.Generator) -> torch.Tensor:
    """n samples of the truth, [n, 1, 1, 2]."""
    code = torch.randint(0, 4, (n,), generator=g)
    return (centres[code] + sigma * torch.randn(n, 2, generator=g)).view(n, 1, 1, 2)


def elbo_fit(model, params, centres, sigma, steps, g, lr=0.03, batch=512) -> None:
    """Adam on the exact −ELBO of fresh draws, the learning rate decayed linearly to 0 (so
    the fit ends near its optimum rather than jittering around it)."""
    opt = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / steps)
    for _ in range(steps):
        loss = model(draws(centres, sigma, batch, g)).negative_elbo.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()


@torch.no_grad()
def per_example(model, x) -> dict:
    model.eval()
    return {"elbo": -model(x).negative_elbo, "loglik": exact_log_likelihood(model, x)}


def toy_verdicts(centres, sigma=0.8, steps=250, held_out=20000, seed=0):
    """The recipe's claims for the toy: the paired differences of each ELBO-trained decoder
    (σ fixed, σ learned) against the truth on the same held-out draws, decided by
    `groundtruth.decide` (exact log-likelihood in place of AIS: error bound 0)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only cost
    try:
        centres = torch.tensor(centres, dtype=torch.float32)
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed + 1)
        truth = toy_vae(centres, sigma, "fixed")
        truth.decoder.requires_grad_(False)
        elbo_fit(truth, truth.encoder.parameters(), centres, sigma, steps, g)
        x = draws(centres, sigma, held_out, torch.Generator().manual_seed(seed + 2))
        before = per_example(truth, x)
        diffs, moved = {}, {}
        for (key, _, _), mode in zip(DECODERS, ("fixed", "learned-shared")):
            model = toy_vae(centres, sigma, mode)
            model.encoder.load_state_dict(truth.encoder.state_dict())
            elbo_fit(model, model.parameters(), centres, sigma, steps, g)
            after = per_example(model, x)
            diffs[key] = {
                "elbo": paired_difference(after["elbo"], before["elbo"]),
                "ais": paired_difference(after["loglik"], before["loglik"]),
                "ais_bound": 0.0,  # exact
                "ais_examples": held_out,
                "fid": NO_EFFECT,
            }
            moved[key] = float((model.decoder.centres.detach() - centres).norm())
    finally:
        torch.set_num_threads(threads)
    return decide(diffs, weak=False), diffs, moved


def outcome(verdicts, claim):
    return next(v["verdict"] for v in verdicts if v["claim"] == claim)


def test_elbo_training_from_the_truth_raises_the_elbo_and_lowers_the_exact_likelihood():
    # a rhombus: not a rectangle, so the factorised encoder cannot match the true posterior
    verdicts, diffs, moved = toy_verdicts([[2.0, 0.0], [0.0, 1.0], [0.0, -1.0], [-2.0, 0.0]])
    for key, label, _ in DECODERS:
        elbo_claim, loglik_claim, _ = claims(label)
        assert outcome(verdicts, elbo_claim) == "reproduced", diffs[key]["elbo"]
        assert outcome(verdicts, loglik_claim) == "reproduced", diffs[key]["ais"]
        assert diffs[key]["elbo"]["mean"] > 0 > diffs[key]["ais"]["mean"]
        assert moved[key] > 0.1  # the decoder left the truth
    assert reproduced(verdicts)


def test_a_consistent_truth_shows_no_effect():
    # a rectangle: the posterior factorises and the ELBO is tight at the truth, which then
    # is the ELBO's optimum too — the decoder stays and neither claim is reproduced
    verdicts, diffs, moved = toy_verdicts([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    assert not reproduced(verdicts)
    for key, label, _ in DECODERS:
        assert outcome(verdicts, claims(label)[0]) != "reproduced", diffs[key]["elbo"]
        assert abs(diffs[key]["ais"]["mean"]) < 1e-3 and moved[key] < 0.1


# --- the evidence code --------------------------------------------------------------------


def test_paired_difference_standard_error_is_sd_over_root_n():
    rng = np.random.default_rng(0)
    before = rng.normal(600.0, 30.0, 150)
    after = before + rng.normal(-2.0, 1.5, 150)
    d = paired_difference(after.tolist(), before.tolist())
    by_hand = after - before
    sd = math.sqrt(((by_hand - by_hand.mean()) ** 2).sum() / (len(by_hand) - 1))
    assert d["n"] == 150 and d["mean"] == pytest.approx(by_hand.mean(), rel=1e-12)
    assert d["sd"] == pytest.approx(sd, rel=1e-12)
    assert d["se"] == pytest.approx(sd / math.sqrt(150), rel=1e-12)
    assert [d["low"], d["high"]] == pytest.approx(
        [by_hand.mean() - 1.959964 * d["se"], by_hand.mean() + 1.959964 * d["se"]], rel=1e-6
    )
    # paired, not two-sample: the examples' own spread (sd 30) does not enter
    assert d["se"] < 0.2 < np.std(after) / math.sqrt(150)
    with pytest.raises(VaelabError, match="same examples"):
        paired_difference(after[:100].tolist(), before.tolist())


def measurement(loglik, elbo, digest="A", held="H", gap=(1.0, 0.1)):
    return {
        "elbo_per_example": list(elbo),
        "iwae_per_example": list(elbo),
        "held_out_sha256": held,
        "ais_per_example": list(loglik),
        "iwae_per_example_ais_examples": list(loglik),
        "examples_sha256": digest,
        "ais_examples": len(loglik),
        "bdmc_gap": {"mean": gap[0], "se": gap[1]},
    }


def test_differences_pair_the_same_examples_for_every_decoder():
    rng = np.random.default_rng(1)
    truth = rng.normal(600.0, 30.0, 120)
    rows = [{"fid": 1.0, "fid_se": 0.1}, {"fid": 1.0, "fid_se": 0.1},
            {"fid": 5.0, "fid_se": 0.3}, {"fid": 6.0, "fid_se": 0.4}]  # fmt: skip
    per_example = {
        "truth": measurement(truth, truth - 30),
        "fixed": measurement(truth - 5 + rng.normal(0, 1, 120), truth - 25, gap=(2.0, 0.5)),
        "learned": measurement(truth - 6 + rng.normal(0, 1, 120), truth - 24),
    }
    diffs = differences(rows, per_example)
    fixed = diffs["fixed"]
    assert fixed["ais"]["mean"] == pytest.approx(
        np.mean(np.array(per_example["fixed"]["ais_per_example"]) - truth)
    )
    assert fixed["elbo"]["mean"] == pytest.approx(5.0) and fixed["ais_examples"] == 120
    assert fixed["ais_bound"] == pytest.approx(2.0 + 1.959964 * 0.5, rel=1e-6)  # the larger
    assert fixed["fid"]["mean"] == pytest.approx(4.0)
    assert fixed["fid"]["se"] == pytest.approx(math.hypot(0.3, 0.1))
    verdicts = decide(diffs, weak=False)
    assert reproduced(verdicts)  # a 5-nat drop, SE ~0.1, bound ~3: decided
    assert all(v["verdict"] == "reproduced" for v in verdicts)
    # one seed's summary is that seed's own; so are its verdicts
    assert summary_differences([diffs]) == diffs

    other = dict(per_example, fixed=dict(per_example["fixed"], examples_sha256="B"))
    with pytest.raises(VaelabError, match="different examples"):
        differences(rows, other)
    other = dict(per_example, learned=dict(per_example["learned"], held_out_sha256="G"))
    with pytest.raises(VaelabError, match="different examples"):
        differences(rows, other)


def test_the_likelihood_verdict_needs_100_examples_and_a_tight_ais():
    effect = normal_interval(-10.0, 1.0)  # interval ≈ [−11.96, −8.04]: margin 8.04
    assert ais_caveat(effect, 3.0, MIN_AIS_EXAMPLES) is None
    assert "AIS too loose" in ais_caveat(effect, 8.5, MIN_AIS_EXAMPLES)
    assert "10 < 100 examples" in ais_caveat(effect, 0.0, 10)
    assert "no BDMC" in ais_caveat(effect, None, MIN_AIS_EXAMPLES)
    assert ais_bound({"bdmc_gap": {"mean": 1.0, "se": 0.5}}, {}) is None
    wide = normal_interval(-1.0, 1.0)  # contains 0: no margin, so any bound is too loose
    assert "AIS too loose" in ais_caveat(wide, 0.0, MIN_AIS_EXAMPLES)

    def diffs(bound, examples):
        one = {"elbo": normal_interval(3.0, 0.5), "ais": effect, "ais_bound": bound,
               "ais_examples": examples, "fid": normal_interval(4.0, 0.5)}  # fmt: skip
        return {key: one for key, _, _ in DECODERS}

    for bound, examples in ((9.0, 200), (1.0, 50)):
        verdicts = decide(diffs(bound, examples), weak=False)
        loglik = [v for v in verdicts if "log-likelihood" in v["claim"]]
        assert all(v["verdict"] == "inconclusive" and v["caveat"] for v in loglik)
        assert not reproduced(verdicts)
    verdicts = decide(diffs(1.0, 200), weak=True)
    assert reproduced(verdicts)
    fid = [v for v in verdicts if "FID" in v["claim"]]
    assert all(v["verdict"] == "inconclusive" and v["caveat"] == "weak features" for v in fid)
