"""Stage 1 decomposition: mask shapes, initial values, gradients of the adversarial step, the bound."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dwgn.models.network import count_parameters
from dwgn.training.decomposition import (
    MASK_FLOOR,
    N_COMPONENTS,
    SIGMA_MAX,
    Decomposer,
    degrade,
    generator_step,
    hard_gumbel_softmax,
    make_generator_optimizer,
    recover_background,
    sample_noise,
)


class StandIn(nn.Module):
    """A small restoration network (B,3,H,W) -> (B,3,H,W) that trains in milliseconds."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.GELU(), nn.Conv2d(16, 3, 3, 1, 1))

    def forward(self, x):
        return x - self.body(x)


def _setup(size=32, batch=2, seed=0):
    torch.manual_seed(seed)
    clean = torch.rand(batch, 3, size, size)
    return StandIn(), Decomposer(), clean, sample_noise(batch, size, size, seed=seed, step=0)


@pytest.mark.parametrize("size", [(128, 128), (37, 50)])
def test_masks_have_the_full_input_size(size):
    h, w = size
    decomposer = Decomposer()
    clean = torch.rand(2, 3, h, w)
    noise = sample_noise(2, h, w, seed=1, step=0)
    assert decomposer.gen_b.logits(clean).shape == (2, N_COMPONENTS, h, w)
    out = decomposer(clean, noise)
    for t in (out.output, out.mask_b, out.mask_d, out.distractor):
        assert t.shape == (2, 3, h, w)


def test_components_start_at_documented_finite_values():
    decomposer = Decomposer()
    quantiles = (torch.arange(10) + 0.5) / 10
    torch.testing.assert_close(decomposer.gen_b.means, MASK_FLOOR + (1 - MASK_FLOOR) * quantiles)
    torch.testing.assert_close(decomposer.gen_d.means, quantiles)
    for gen in (decomposer.gen_b, decomposer.gen_d):
        torch.testing.assert_close(gen.spreads, torch.full((10,), SIGMA_MAX / 2))


def test_generator_parameter_counts():
    decomposer = Decomposer()
    # ≈1.7 M each; G_d sees 6 input channels ([B, D]), so its first conv is 32·3·16 weights larger
    assert count_parameters(decomposer.gen_b) == 1_718_398
    assert count_parameters(decomposer.gen_d) == 1_718_398 + 32 * 3 * 16


def test_hard_gumbel_softmax_is_one_hot_with_gradient():
    logits = torch.randn(2, N_COMPONENTS, 5, 6, requires_grad=True)
    gumbel = sample_noise(2, 5, 6, seed=3, step=0).gumbel_b
    y = hard_gumbel_softmax(logits, gumbel, tau=0.1)
    assert set(y.detach().unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(y.detach().sum(1), torch.ones(2, 5, 6))
    assert torch.equal(y.detach().argmax(1), (logits + gumbel).detach().argmax(1))
    (y * torch.randn_like(y)).sum().backward()
    assert logits.grad.abs().sum() > 0


def test_noise_is_reproducible_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a = sample_noise(2, 8, 8, seed=5, step=7)
    b = sample_noise(2, 8, 8, seed=5, step=7)
    c = sample_noise(2, 8, 8, seed=5, step=8)
    d = sample_noise(2, 8, 8, seed=5, step=7, rank=1)
    assert torch.equal(torch.get_rng_state(), state)
    for name in ("colour", "gumbel_b", "gumbel_d", "eps_b", "eps_d"):
        assert torch.equal(getattr(a, name), getattr(b, name))
        assert not torch.equal(getattr(a, name), getattr(c, name))
        assert not torch.equal(getattr(a, name), getattr(d, name))
    assert torch.isfinite(a.gumbel_b).all() and a.colour.min() >= 0 and a.colour.max() <= 1


def test_generator_step_trains_generators_through_a_frozen_network():
    network, decomposer, clean, noise = _setup()
    before = copy.deepcopy(network.state_dict())
    optimizer = make_generator_optimizer(decomposer)
    generator_step(network, decomposer, optimizer, clean, noise)
    for p in network.parameters():
        assert p.grad is None and p.requires_grad  # no gradient, and unfrozen again afterwards
    for k, v in network.state_dict().items():
        assert torch.equal(v, before[k])
    for gen in (decomposer.gen_b, decomposer.gen_d):
        assert gen.mean_logit.grad.abs().sum() > 0
        assert gen.spread_logit.grad.abs().sum() > 0
        # the logit net learns too: its first conv sees the gradient through R, O and the Gumbel choice
        assert gen.logits.downs[0][0].weight.grad.abs().sum() > 0


def test_generator_step_raises_the_networks_loss():
    network, decomposer, clean, noise = _setup(size=32)
    before = copy.deepcopy(decomposer)
    optimizer = make_generator_optimizer(decomposer)
    reported = generator_step(network, decomposer, optimizer, clean, noise)
    with torch.no_grad():
        loss_before = F.l1_loss(network(before(clean, noise).output), clean).item()
        loss_after = F.l1_loss(network(decomposer(clean, noise).output), clean).item()
    assert reported.shape == () and float(reported) == pytest.approx(loss_before, rel=1e-6)
    assert loss_after > loss_before


def test_network_input_carries_no_graph():
    _, decomposer, clean, noise = _setup()
    out = degrade(decomposer, clean, noise)
    assert not out.requires_grad
    torch.testing.assert_close(out, decomposer(clean, noise).output.detach())


def _assert_bound(decomposer, clean, noise):
    with torch.no_grad():
        d = decomposer(clean, noise)
        unclipped = clean * d.mask_b + d.distractor * d.mask_d
    assert d.mask_b.min() >= MASK_FLOOR and d.mask_b.max() <= 1
    assert d.mask_d.min() >= 0 and (d.mask_b + d.mask_d).max() <= 1 + 1e-6
    # the clip is a no-op: O is exactly affine in B with slope M_b >= floor, so B is recoverable
    torch.testing.assert_close(d.output, unclipped, rtol=0, atol=1e-6)
    torch.testing.assert_close(recover_background(d), clean, rtol=0, atol=1e-5 / MASK_FLOOR)


def test_background_stays_recoverable_after_adversarial_training():
    network, decomposer, clean, noise = _setup(size=16)
    optimizer = make_generator_optimizer(decomposer, lr=5e-2)  # a strong adversary, several steps
    for step in range(5):
        generator_step(network, decomposer, optimizer, clean, sample_noise(2, 16, 16, seed=0, step=step))
    _assert_bound(decomposer, clean, noise)


def test_background_stays_recoverable_at_the_extremes():
    _, _, clean, noise = _setup()
    decomposer = Decomposer(budget=1.0)   # no budget: the floor itself is reachable
    with torch.no_grad():  # the adversary's best attempt at erasing B: every μ_b at its lowest, σ maximal
        decomposer.gen_b.mean_logit.fill_(-50)
        decomposer.gen_b.spread_logit.fill_(50)
        decomposer.gen_d.mean_logit.fill_(50)
        decomposer.gen_d.spread_logit.fill_(50)
    _assert_bound(decomposer, clean, noise)
    with torch.no_grad():
        mask_b = decomposer(clean, noise).mask_b
    assert mask_b.min() == pytest.approx(MASK_FLOOR)  # reached, never crossed


def test_generator_step_through_the_real_network():
    dwgn = pytest.importorskip("dwgn")
    try:
        network = dwgn.build_model("tiny")
    except (AttributeError, NotImplementedError) as err:  # the network is still landing
        pytest.skip(f"dwgn.build_model('tiny') unavailable: {err}")
    _, decomposer, clean, noise = _setup(size=64, batch=1)
    optimizer = make_generator_optimizer(decomposer)
    generator_step(network, decomposer, optimizer, clean, noise)
    assert all(p.grad is None for p in network.parameters())
    assert decomposer.gen_b.logits.downs[0][0].weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# Stage 1 on the engine (dwgn.training.pretraining): end to end, checkpoint contents, exact resume
# ---------------------------------------------------------------------------------------------
REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_config_keys_and_errors(assert_mentions):
    from dwgn.training.config import ConfigError
    from dwgn.training.cli import parse_config
    from dwgn.training.pretraining import PretrainingConfig

    cfg = parse_config(PretrainingConfig, ["--degradation", "weather", "--mask-floor", "0.5", "--steps", "7"])
    assert (cfg.degradation, cfg.mask_floor, cfg.steps, cfg.generator_lr) == ("weather", 0.5, 7, 2e-4)
    with pytest.raises(ConfigError) as info:
        parse_config(PretrainingConfig, ["--mask-floor", "0"])
    assert_mentions(str(info.value), "mask_floor", "(0, 1)", "0.0")
    with pytest.raises(ConfigError) as info:
        parse_config(PretrainingConfig, ["--degradation", "fog"])
    assert_mentions(str(info.value), "degradation", "adversarial, weather", "'fog'")


def test_resume_refuses_the_other_degradation(tmp_path, assert_mentions):
    from dwgn.training.checkpoint import CheckpointError
    from dwgn.training.cli import parse_config
    from dwgn.training.pretraining import AdversarialDecomposition, NoGenerators, PretrainingConfig

    cfg = parse_config(PretrainingConfig, [])
    adversarial, weather = AdversarialDecomposition(cfg), NoGenerators()
    adversarial.setup(torch.device("cpu"), 0, None)
    weather.setup(torch.device("cpu"), 0, None)
    saved = adversarial.state_dict()
    assert set(saved["generators"]) == {"model", "optimizer"}
    last = tmp_path / "last.pt"
    adversarial.load_state_dict(saved, last)  # its own state loads back
    with pytest.raises(CheckpointError) as info:
        adversarial.load_state_dict({}, last)
    assert_mentions(str(info.value), str(last), "generators", "--degradation weather", "--out")
    with pytest.raises(CheckpointError) as info:
        weather.load_state_dict(saved, last)
    assert_mentions(str(info.value), str(last), "--degradation adversarial", "--out")


def _script(tmp_path, *flags):
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # see one_thread()
    proc = subprocess.run([sys.executable, str(REPO / "pre-training.py"), "--steps", "3", "--out", str(out), *flags],
                          cwd=tmp_path, capture_output=True, text=True, timeout=1200, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


@pytest.mark.slow
def test_script_adversarial_end_to_end(tmp_path):
    import json

    import dwgn
    from dwgn.training.checkpoint import load_checkpoint

    out, stdout = _script(tmp_path)
    assert "not ImageNet" in stdout  # says in one line that it fell back to the packaged photos
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] == 3 and ckpt["config"]["degradation"] == "adversarial"
    fresh = Decomposer()
    assert set(ckpt["generators"]["model"]) == set(fresh.state_dict())
    assert ckpt["generators"]["optimizer"]["state"]  # Adam moments exist: the generators took steps
    assert not torch.equal(ckpt["generators"]["model"]["gen_b.mean_logit"], fresh.gen_b.mean_logit.detach())
    model = dwgn.load_model(out / "last.pt")  # what fine-tuning starts from
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    record = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 3 and {"loss", "lr", "generator_loss", "mask_b", "mask_d"} <= set(record)
    assert record["mask_b"] >= MASK_FLOOR
    _, again = _script(tmp_path)
    assert "already finished" in again


@pytest.mark.slow
def test_script_weather_end_to_end(tmp_path):
    from dwgn.training.checkpoint import load_checkpoint

    out, _ = _script(tmp_path, "--degradation", "weather")
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] == 3 and ckpt["config"]["degradation"] == "weather" and "generators" not in ckpt


def _run(out, steps, kill_at=None):
    from dwgn.training.cli import parse_config
    from dwgn.training.engine import train
    from dwgn.training.pretraining import AdversarialDecomposition, PretrainingConfig, build_stage, training_set

    class Killed(RuntimeError):
        pass

    class Dying(AdversarialDecomposition):
        def prepare(self, batch, step):
            if step == kill_at:
                raise Killed(f"killed before step {kill_at}")
            return super().prepare(batch, step)

    cfg = parse_config(PretrainingConfig, ["--steps", str(steps), "--out", str(out), "--batch-size", "2",
                                           "--save-every", "2", "--num-workers", "0", "--log-every", "1"])
    stage = build_stage(cfg, training_set(cfg))
    if kill_at is not None:
        stage.hooks = Dying(cfg)
        with pytest.raises(Killed):
            train(cfg, stage)
    else:
        train(cfg, stage)


@pytest.mark.slow
def test_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    from dwgn.training.checkpoint import load_checkpoint

    _run(tmp_path / "whole", 4)
    _run(tmp_path / "resumed", 4, kill_at=3)          # dies after the step-2 checkpoint, mid step 3
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 2
    _run(tmp_path / "resumed", 4)                     # the same command again resumes
    a = load_checkpoint(tmp_path / "whole" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert a["step"] == b["step"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["generators"]["model"]:
        assert torch.equal(a["generators"]["model"][key], b["generators"]["model"][key]), key


# ---------------------------------------------------------------------------------------------
# The adversary keeps learning (bounded logits, budget, information term)
# ---------------------------------------------------------------------------------------------
def test_budget_caps_each_images_mean_share_and_leaves_smaller_ones_alone():
    from dwgn.training.decomposition import apply_budget

    share = torch.stack([torch.full((3, 4, 4), 0.9), torch.full((3, 4, 4), 0.1)])   # (2,3,4,4)
    share[0, :, 0, 0] = 0.3
    out = apply_budget(share, 0.4)
    assert out[0].mean().item() == pytest.approx(0.4)
    torch.testing.assert_close(out[0], share[0] * 0.4 / share[0].mean())           # scaled, shape kept
    torch.testing.assert_close(out[1], share[1])                                    # under budget: unchanged


def test_budget_holds_in_the_decomposer_and_the_bound_survives():
    _, decomposer, clean, noise = _setup()
    with torch.no_grad():   # the adversary at its extreme: every component at the bound
        decomposer.gen_b.mean_logit.fill_(-50)
        decomposer.gen_d.mean_logit.fill_(50)
        d = decomposer(clean, noise)
    given_up = (1 - d.mask_b) / (1 - MASK_FLOOR)
    assert given_up.mean(dim=(1, 2, 3)).max().item() == pytest.approx(decomposer.budget, abs=1e-5)
    assert d.share_d.mean(dim=(1, 2, 3)).max().item() == pytest.approx(decomposer.budget, abs=1e-5)
    _assert_bound(decomposer, clean, noise)


def test_logits_are_bounded_so_no_choice_is_certain():
    from dwgn.training.decomposition import LOGIT_BOUND

    _, decomposer, clean, noise = _setup()
    with torch.no_grad():
        decomposer.gen_b.logits.head.bias.copy_(torch.tensor([1e4] + [-1e4] * (N_COMPONENTS - 1)))
        sample = decomposer.gen_b.sample(clean, noise.gumbel_b, noise.eps_b)
    p_max = 1 / (1 + (N_COMPONENTS - 1) * torch.exp(torch.tensor(-2 * LOGIT_BOUND)))   # from ℓ ∈ [−L, L]
    assert sample.probs.max().item() <= p_max.item() + 1e-6
    assert sample.probs[:, 0].min().item() == pytest.approx(p_max.item(), abs=1e-4)


def test_information_term_against_its_definition():
    from dwgn.training.decomposition import information

    n = N_COMPONENTS
    onehot = lambda idx: F.one_hot(torch.tensor(idx), n).float()[..., None, None].expand(-1, -1, 2, 2)  # noqa: E731
    same = onehot([3, 3, 3, 3])                     # every image picks component 3 everywhere
    usage, dependence = information(same)
    assert usage.item() == pytest.approx(0.0, abs=1e-6) and dependence.item() == pytest.approx(0.0, abs=1e-6)
    different = onehot([0, 1, 2, 3])                # each image its own component: I = ln 4, H = ln 4
    usage, dependence = information(different)
    assert usage.item() == pytest.approx(math.log(4) / math.log(n), rel=1e-5)
    assert dependence.item() == pytest.approx(math.log(4) / math.log(n), rel=1e-5)
    uniform = torch.full((4, n, 2, 2), 1.0 / n)     # all components, but the same for every image
    usage, dependence = information(uniform)
    assert usage.item() == pytest.approx(1.0, rel=1e-5) and dependence.item() == pytest.approx(0.0, abs=1e-6)


def test_mask_statistics_reference_values():
    from dwgn.training.mask_stats import choice_entropy_bits, mean_pairwise_correlation

    a = torch.rand(8, 8)
    assert mean_pairwise_correlation(torch.stack([a, 2 * a + 1, a])) == pytest.approx(1.0)
    assert mean_pairwise_correlation(torch.stack([a, -a])) == pytest.approx(-1.0)
    assert mean_pairwise_correlation(torch.full((3, 8, 8), 0.5)) == pytest.approx(1.0)   # one flat mask
    choice = F.one_hot(torch.tensor([0, 1, 2, 3]).repeat(4).view(2, 2, 4), N_COMPONENTS).permute(0, 3, 1, 2).float()
    assert choice_entropy_bits(choice) == pytest.approx(2.0)                              # 4 even components


def _short_run(steps, *, legacy):
    """Network + generators on 32² crops of the packaged photos, 1:1, Adam 2e-4; returns per-step health.
    legacy=True is DESIGN.md §2 as first written: τ 0.1 on unbounded logits, no budget, no information term."""
    from dwgn.data.images import read_image
    from dwgn.data.photos import packaged_photos
    from dwgn.data.transforms import to_tensor
    from dwgn.training.decomposition import logit_gradient_norms
    from dwgn.training.mask_stats import mask_statistics

    photos = [to_tensor(read_image(p)) for p in packaged_photos("train")]
    g = torch.Generator().manual_seed(0)

    def crops(n=4, size=32):
        out = []
        for _ in range(n):
            im = photos[int(torch.randint(len(photos), (1,), generator=g))]
            y, x = (int(torch.randint(s - size, (1,), generator=g)) for s in im.shape[1:])
            out.append(im[:, y:y + size, x:x + size])
        return torch.stack(out)                                                   # (4,3,32,32)

    torch.manual_seed(0)
    network, decomposer = StandIn(), Decomposer(budget=1.0 if legacy else 0.4)
    kwargs = {}
    if legacy:
        for gen in (decomposer.gen_b, decomposer.gen_d):
            gen.tau, gen.logit_bound = 0.1, 1e9
        kwargs = {"entropy_weight": 0.0, "logit_decay": 0.0}
    net_opt, gen_opt = torch.optim.Adam(network.parameters(), 2e-4), make_generator_optimizer(decomposer)
    history = []
    for step in range(steps):
        clean = crops()
        noise = sample_noise(4, 32, 32, seed=0, step=step)
        loss = F.l1_loss(network(degrade(decomposer, clean, noise)), clean)
        net_opt.zero_grad()
        loss.backward()
        net_opt.step()
        generator_step(network, decomposer, gen_opt, clean, noise, **kwargs)
        history.append({**logit_gradient_norms(decomposer), **mask_statistics(decomposer, decomposer(clean, noise))})
    return history


@pytest.mark.parametrize("legacy", [False, True])
def test_short_run_keeps_the_adversary_learning_where_the_old_recipe_collapses(legacy):
    history = _short_run(50, legacy=legacy)
    last = history[-10:]
    alive = (all(h["grad_b"] > 1e-4 and h["grad_d"] > 1e-4 for h in last)
             and all(h["dependence_b"] > 2e-4 and h["dependence_d"] > 2e-4 for h in last)
             and min(min(h["entropy_b"], h["entropy_d"]) for h in last) > 1.5
             and max(max(h["on_bound_b"], h["on_bound_d"]) for h in last) <= 0.5)
    # the fixed recipe keeps a gradient, image-dependent choices and several components; the paper's
    # recipe as written ends with zero gradient and one component chosen the same way for every image
    assert alive != legacy, last[-1]
