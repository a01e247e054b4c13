"""Tests for the Gradient Balance Module: ``GradientBalancer``, ``balance_weights``, ``normalize_image_gradients``."""

from __future__ import annotations

import contextlib
import copy
import io
import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hmdc_modules.balancer import BalancerRecord, GradientBalancer
from hmdc_modules.functional.balancing import balance_weights, normalize_image_gradients

SETTINGS = settings(deadline=None, max_examples=25)


# --------------------------------------------------------------------------------------------- references


class ReferenceBalancer:
    """Slow, obviously-correct GBM: Python floats and explicit loops over groups, losses and gradient entries."""

    def __init__(self, num_losses, num_groups, interval, init, accumulate="sum", momentum=0.9, norm="inf"):
        self.k, self.interval, self.init = num_losses, interval, init
        self.accumulate, self.momentum, self.norm = accumulate, momentum, norm
        self.acc = [[init] * num_losses for _ in range(num_groups)]
        self.calls = [0] * num_groups
        self.samples = [0] * num_groups

    def weights(self, group):
        row = self.acc[group]
        positive = [a for a in row if a > 0]
        smallest = min(positive) if positive else None
        return [smallest / a if a > 0 else 1.0 for a in row]

    def call(self, group, grads):
        """``grads[k]`` is the flat list of loss k's gradient entries. Returns (weights, sampled magnitudes)."""
        sampled = None
        if self.calls[group] % self.interval == 0:
            sampled = []
            for k in range(self.k):
                if self.norm == "inf":
                    m = 0.0
                    for v in grads[k]:
                        m = max(m, abs(v))
                else:
                    s = 0.0
                    for v in grads[k]:
                        s += v * v
                    m = math.sqrt(s)
                sampled.append(m)
            n = self.samples[group]
            for k in range(self.k):
                a = self.acc[group][k]
                if self.accumulate == "sum":
                    a = a + sampled[k]
                elif self.accumulate == "mean":
                    a = sampled[k] if n == 0 else (a * n + sampled[k]) / (n + 1)
                else:
                    a = self.momentum * a + (1.0 - self.momentum) * sampled[k]
                self.acc[group][k] = a
            self.samples[group] += 1
        self.calls[group] += 1
        return self.weights(group), sampled


def reference_normalize(grad, eps):
    """Per-image, per-channel L-infinity normalisation with explicit loops over slices and pixels."""
    flat = grad.reshape(-1, grad.shape[-2], grad.shape[-1])
    out = torch.zeros_like(flat)
    for s in range(flat.shape[0]):
        peak = 0.0
        for i in range(flat.shape[1]):
            for j in range(flat.shape[2]):
                peak = max(peak, abs(float(flat[s, i, j])))
        for i in range(flat.shape[1]):
            for j in range(flat.shape[2]):
                out[s, i, j] = 0.0 if peak + eps == 0 else float(flat[s, i, j]) / (peak + eps)
    return out.reshape(grad.shape)


def quadratic_losses(x, coeffs, scales):
    """L_k = 0.5 * c_k * sum_i a_{k,i} x_i^2, whose gradient is c_k * a_{k,i} * x_i."""
    return [0.5 * c * (a * x.pow(2)).sum() for a, c in zip(coeffs, scales, strict=True)]


def balancer_state(balancer):
    return (
        {k: v.clone() for k, v in balancer.state_dict().items() if isinstance(v, torch.Tensor)},
        balancer.history,
        balancer.global_step,
    )


def assert_same_state(a, b):
    (ta, ha, sa), (tb, hb, sb) = a, b
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key
    assert ha == hb
    assert sa == sb


# --------------------------------------------------------------------------------------------- reference semantics


@pytest.mark.parametrize("accumulate", ["sum", "mean", "ema"])
@pytest.mark.parametrize("init", [1e-6, 0.0])
@pytest.mark.parametrize("norm", ["inf", "2"])
def test_matches_slow_reference_multi_group(accumulate, init, norm):
    rng = random.Random(1234)
    num_losses, num_groups, interval, num_calls = 3, 3, 3, 36
    coeffs = torch.tensor([[rng.uniform(0.5, 2.0) for _ in range(5)] for _ in range(num_losses)], dtype=torch.float64)
    groups = [rng.randrange(num_groups) for _ in range(num_calls)]
    balancer = GradientBalancer(
        num_losses, num_groups, interval, init_value=init, accumulate=accumulate, momentum=0.7, norm=norm
    )
    reference = ReferenceBalancer(num_losses, num_groups, interval, init, accumulate, 0.7, norm)
    expected_history = []
    for step, group in enumerate(groups):
        x = torch.tensor([rng.uniform(-2.0, 2.0) for _ in range(5)], dtype=torch.float64, requires_grad=True)
        # Scales from 1e-9 to 1e2: some image gradients are far below the reference's 1e-6 start.
        scales = [10.0 ** rng.uniform(-9.0, 2.0) for _ in range(num_losses)]
        losses = quadratic_losses(x, coeffs, scales)
        xs = x.detach().tolist()
        grads = [[scales[k] * float(coeffs[k, i]) * xs[i] for i in range(5)] for k in range(num_losses)]
        ref_weights, sampled = reference.call(group, grads)

        total = balancer(losses, x, group)

        torch.testing.assert_close(balancer.weights(group), torch.tensor(ref_weights), rtol=1e-5, atol=0)
        ref_total = sum(w * loss.item() for w, loss in zip(ref_weights, losses, strict=True))
        assert math.isclose(total.item(), ref_total, rel_tol=1e-5)
        if sampled is not None:
            expected_history.append((step, group, sampled, ref_weights))
        for g in range(num_groups):  # untouched groups keep their weights
            torch.testing.assert_close(balancer.weights(g), torch.tensor(reference.weights(g)), rtol=1e-5, atol=0)

    assert len(balancer.history) == len(expected_history)
    for record, (step, group, sampled, ref_weights) in zip(balancer.history, expected_history, strict=True):
        assert isinstance(record, BalancerRecord)
        assert (record.step, record.group) == (step, group)
        for got, want in zip(record.magnitudes, sampled, strict=True):
            assert math.isclose(got, want, rel_tol=1e-5)
        for got, want in zip(record.weights, ref_weights, strict=True):
            assert math.isclose(got, want, rel_tol=1e-5)
    assert balancer.num_calls.tolist() == reference.calls
    assert balancer.num_samples.tolist() == reference.samples
    assert balancer.global_step == num_calls


def test_init_1e6_reproduces_reference_numbers():
    x = torch.tensor([1.0, -1.0], requires_grad=True)
    # Image-gradient max-abs of 2e-7 (below the 1e-6 start) and 1.0.
    losses = [2e-7 * x.sum(), x[0] * 1.0]
    ref = GradientBalancer(2, init_value=1e-6)
    ref(losses, x)
    # A = [1e-6 + 2e-7, 1e-6 + 1] -> w = [1, 1.2e-6 / 1.000001]
    torch.testing.assert_close(ref.weights(), torch.tensor([1.0, 1.2e-6 / 1.000001]), rtol=1e-5, atol=0)
    clean = GradientBalancer(2)
    clean(losses, x)
    torch.testing.assert_close(clean.weights(), torch.tensor([1.0, 2e-7]), rtol=1e-5, atol=0)


def test_interval_and_forced_sampling():
    x = torch.ones(3, requires_grad=True)
    balancer = GradientBalancer(2, num_groups=2, interval=3)

    def call(group=0, sample=None):
        balancer([x.sum(), 5.0 * x.sum()], x, group, sample=sample)

    call(sample=False)  # call 0 of group 0 would sample
    assert balancer.history == []
    assert balancer.weights().tolist() == [1.0, 1.0]
    call(sample=True)  # call 1, forced
    call()  # call 2: no
    call()  # call 3: samples
    call(group=1)  # group 1 has its own counter: its call 0 samples
    assert [(r.step, r.group) for r in balancer.history] == [(1, 0), (3, 0), (4, 1)]
    assert balancer.num_samples.tolist() == [2, 1]
    assert balancer.num_calls.tolist() == [4, 1]


# --------------------------------------------------------------------------------------------- properties


@SETTINGS
@given(
    num_losses=st.integers(2, 4),
    which=st.integers(0, 3),
    log_c=st.floats(-6.0, 6.0),
    log_scales=st.lists(st.floats(-3.0, 3.0), min_size=4, max_size=4),
    num_steps=st.integers(1, 3),
    seed=st.integers(0, 2**16),
    accumulate=st.sampled_from(["sum", "mean", "ema"]),
)
def test_scale_invariance(num_losses, which, log_c, log_scales, num_steps, seed, accumulate):
    which = which % num_losses
    c = 10.0**log_c
    gen = torch.Generator().manual_seed(seed)
    coeffs = torch.rand(num_losses, 6, generator=gen, dtype=torch.float64) + 0.5
    base_scales = [10.0**s for s in log_scales[:num_losses]]
    scaled_scales = [s * c if k == which else s for k, s in enumerate(base_scales)]
    base = GradientBalancer(num_losses, interval=1, accumulate=accumulate)
    scaled = GradientBalancer(num_losses, interval=1, accumulate=accumulate)
    for _ in range(num_steps):
        x = (torch.rand(6, generator=gen, dtype=torch.float64) + 0.5).requires_grad_()
        base(quadratic_losses(x, coeffs, base_scales), x)
        scaled(quadratic_losses(x, coeffs, scaled_scales), x)

    def shares(balancer):
        # Share of each loss in the weighted accumulated gradient magnitude, w_k A_k / sum_j w_j A_j ...
        accumulated = balancer.weights().double() * balancer.accumulator[0].double()
        # ... and in the weighted gradient magnitude of the last sampled step, w_k m_k / sum_j w_j m_j.
        last = balancer.weights().double() * torch.tensor(balancer.history[-1].magnitudes, dtype=torch.float64)
        return accumulated / accumulated.sum(), last / last.sum()

    (acc_base, last_base), (acc_scaled, last_scaled) = shares(base), shares(scaled)
    torch.testing.assert_close(acc_base, acc_scaled, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(acc_base, torch.full((num_losses,), 1.0 / num_losses, dtype=torch.float64))
    torch.testing.assert_close(last_base, last_scaled, rtol=1e-4, atol=1e-7)
    others = [k for k in range(num_losses) if k != which]
    wb, ws = base.weights().double()[others], scaled.weights().double()[others]
    torch.testing.assert_close(wb / wb.max(), ws / ws.max(), rtol=1e-4, atol=0)


def test_reference_init_breaks_scale_invariance_for_tiny_gradients():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    shares = []
    for init in (0.0, 1e-6):
        row = []
        for c in (1.0, 1e-4):
            balancer = GradientBalancer(2, init_value=init)
            balancer([1e-3 * c * x.sum(), x.pow(2).sum()], x)
            # Weighted image-gradient magnitudes w_k m_k of the two losses.
            contribution = balancer.weights() * torch.tensor(balancer.history[0].magnitudes)
            row.append((contribution / contribution.sum())[0].item())
        shares.append(row)
    assert math.isclose(shares[0][0], shares[0][1], rel_tol=1e-5)  # init 0: invariant
    assert not math.isclose(shares[1][0], shares[1][1], rel_tol=1e-2)  # init 1e-6: not


@SETTINGS
@given(
    log_scales=st.lists(st.floats(-4.0, 4.0), min_size=2, max_size=5),
    perm_seed=st.integers(0, 2**16),
    init=st.sampled_from([0.0, 1e-6]),
)
def test_permutation_equivariance(log_scales, perm_seed, init):
    num_losses = len(log_scales)
    perm = list(range(num_losses))
    random.Random(perm_seed).shuffle(perm)
    coeffs = torch.linspace(0.5, 2.0, 4 * num_losses, dtype=torch.float64).reshape(num_losses, 4)
    scales = [10.0**s for s in log_scales]
    straight = GradientBalancer(num_losses, interval=2, init_value=init)
    permuted = GradientBalancer(num_losses, interval=2, init_value=init)
    for step in range(3):
        x = torch.linspace(-1.0, 1.0 + step, 4, dtype=torch.float64).requires_grad_()
        losses = quadratic_losses(x, coeffs, scales)
        total_a = straight(losses, x)
        total_b = permuted([losses[p] for p in perm], x)
        assert math.isclose(total_a.item(), total_b.item(), rel_tol=1e-5)
        torch.testing.assert_close(permuted.weights(), straight.weights()[perm])


def test_balancing_two_distribution_matching_losses():
    torch.manual_seed(0)
    real = torch.randn(2, 8, 3, 6, 6)
    syn = torch.randn(2, 4, 3, 6, 6, requires_grad=True)
    embed_a = torch.nn.Conv2d(3, 8, 3).requires_grad_(False)
    embed_b = torch.nn.Conv2d(3, 8, 3).requires_grad_(False)
    with torch.no_grad():
        embed_b.weight.mul_(100.0)

    def mmd(embed, x, y):
        return (embed(x).mean((0, 2, 3)) - embed(y).mean((0, 2, 3))).pow(2).sum()

    def losses_for(c):
        return [mmd(embed_a, real[c], syn[c]), 1e3 * mmd(embed_b, real[c], syn[c])]

    balancer = GradientBalancer(2, num_groups=2, interval=2)
    optimizer = torch.optim.SGD([syn], lr=0.05)
    for step in range(5):
        optimizer.zero_grad()
        for c in range(2):
            losses = losses_for(c)
            sampling = step % 2 == 0
            raw = [torch.autograd.grad(loss, syn, retain_graph=True)[0].abs().max() for loss in losses]
            balancer(losses, syn, c).backward()
            weights = balancer.weights(c)
            if step == 0:
                assert raw[1] / raw[0] > 1e5  # very different scales before balancing
                weighted = [w * m for w, m in zip(weights, raw, strict=True)]
                torch.testing.assert_close(weighted[0], weighted[1], rtol=1e-4, atol=0)
            if sampling:
                # Every loss contributes the same accumulated magnitude: w_k A_k = min_j A_j.
                contribution = weights * balancer.accumulator[c]
                torch.testing.assert_close(contribution, contribution.min().expand(2), rtol=1e-5, atol=0)
        syn.grad.copy_(normalize_image_gradients(syn.grad))
        optimizer.step()
    assert len(balancer.history_arrays(0)["step"]) == 3


def test_zero_gradient_loss_gets_weight_one():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    balancer = GradientBalancer(3)
    balancer([0.0 * x.sum(), 4.0 * x.sum(), x.sum()], x)
    assert balancer.weights().tolist() == [1.0, 0.25, 1.0]


def test_gradcheck_weighted_total():
    coeffs = torch.tensor([[1.0, 2.0, 0.5], [0.3, 0.1, 4.0], [2.0, 2.0, 2.0]], dtype=torch.float64)
    scales = [1.0, 1e3, 1e-2]

    def losses(x):
        return [*quadratic_losses(x, coeffs[:2], scales[:2]), scales[2] * torch.sin(x * coeffs[2]).sum()]

    x = torch.tensor([0.3, -1.2, 0.8], dtype=torch.float64, requires_grad=True)
    balancer = GradientBalancer(3)
    balancer(losses(x), x)  # sampling call sets non-trivial weights
    weights = balancer.weights().double()
    assert weights.min() < 1e-2
    assert torch.autograd.gradcheck(lambda t: balancer(losses(t), t, sample=False), (x,))
    (grad,) = torch.autograd.grad(balancer(losses(x), x, sample=False), x)
    expected = sum(w * torch.autograd.grad(loss, x)[0] for w, loss in zip(weights, losses(x), strict=True))
    torch.testing.assert_close(grad, expected)
    assert balancer.accumulator.grad is None and not balancer.accumulator.requires_grad


def test_multiple_targets_magnitudes():
    x = torch.tensor([1.0, -3.0], requires_grad=True)
    y = torch.tensor([2.0, 2.0, 1.0], requires_grad=True)
    # loss 0 reaches only x (max-abs 3, L2 sqrt(10)); loss 1 reaches both (grads 1 and 2: max 2, L2 sqrt(2+12)).
    losses = [0.5 * x.pow(2).sum(), x.sum() + 2.0 * y.sum()]
    inf_norm = GradientBalancer(2)
    inf_norm(losses, [x, y])
    assert inf_norm.history[0].magnitudes == pytest.approx((3.0, 2.0))
    two_norm = GradientBalancer(2, norm="2")
    two_norm(losses, (x, y))
    assert two_norm.history[0].magnitudes == pytest.approx((math.sqrt(10.0), math.sqrt(14.0)))


# --------------------------------------------------------------------------------------------- backward fast path


@pytest.mark.parametrize("sample", [True, False])
@pytest.mark.parametrize("preexisting_grad", [False, True])
def test_backward_matches_forward_backward(sample, preexisting_grad):
    gen = torch.Generator().manual_seed(0)
    coeffs = torch.rand(3, 4, generator=gen, dtype=torch.float64) + 0.5
    x0 = torch.randn(4, generator=gen, dtype=torch.float64)
    y0 = torch.randn(2, generator=gen, dtype=torch.float64)
    warm = GradientBalancer(3, interval=5)
    xw = x0.clone().requires_grad_()
    warm(quadratic_losses(xw, coeffs, [1.0, 50.0, 0.01]), xw)  # non-trivial weights before the compared call

    results = []
    for method in ("forward", "backward"):
        balancer = copy.deepcopy(warm)
        x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
        if preexisting_grad:
            x.grad, y.grad = torch.ones_like(x), torch.full_like(y, 2.0)
        losses = quadratic_losses(x, coeffs, [2.0, 30.0, 0.1])
        losses[0] = losses[0] + y.pow(3).sum()
        if method == "forward":
            total = balancer(losses, [x, y], sample=sample)
            total.backward()
        else:
            total = balancer.backward(losses, [x, y], sample=sample)
            assert not total.requires_grad
        results.append((total.item(), x.grad.clone(), y.grad.clone(), balancer.weights(), len(balancer.history)))

    (ta, gxa, gya, wa, ha), (tb, gxb, gyb, wb, hb) = results
    assert math.isclose(ta, tb, rel_tol=1e-12)
    torch.testing.assert_close(gxa, gxb)
    torch.testing.assert_close(gya, gyb)
    torch.testing.assert_close(wa, wb)
    assert ha == hb == (2 if sample else 1)


def test_backward_leaves_other_leaves_alone_on_every_call():
    x = torch.ones(3, requires_grad=True)
    p = torch.tensor(2.0, requires_grad=True)
    balancer = GradientBalancer(2)
    balancer.backward([(p * x).sum(), x.pow(2).sum()], x)  # call 0 samples: only x gets a gradient
    assert x.grad is not None and p.grad is None
    first = x.grad.clone()
    balancer.backward([(p * x).sum(), x.pow(2).sum()], x)  # a plain call: still only x, accumulated
    assert p.grad is None
    torch.testing.assert_close(x.grad, 2 * first)  # same losses, same weights: the gradient doubles
    balancer(([(p * x).sum(), x.pow(2).sum()]), x).backward()  # forward(...).backward() reaches every leaf
    assert p.grad is not None


# --------------------------------------------------------------------------------------------- state


def run_scenario(balancer, calls=12):
    gen = torch.Generator().manual_seed(7)
    coeffs = torch.rand(balancer.num_losses, 4, generator=gen) + 0.5
    totals = []
    for step in range(calls):
        x = torch.randn(4, generator=gen).requires_grad_()
        scales = [10.0 ** (k - 1) for k in range(balancer.num_losses)]
        totals.append(balancer(quadratic_losses(x, coeffs, scales), x, step % balancer.num_groups).item())
    return totals


def test_state_dict_round_trip_weights_only():
    balancer = GradientBalancer(3, num_groups=2, interval=3, loss_names=["gm1", "gm2", "md"])
    run_scenario(balancer)
    balancer.reset(1)
    run_scenario(balancer, calls=3)
    state = balancer.state_dict()
    assert {"accumulator", "num_samples", "num_calls", "_extra_state"} <= state.keys()

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    fresh = GradientBalancer(3, num_groups=2, interval=3, loss_names=["gm1", "gm2", "md"])
    fresh.load_state_dict(loaded)

    for g in range(2):
        assert torch.equal(fresh.weights(g), balancer.weights(g))
    assert torch.equal(fresh.accumulator, balancer.accumulator)
    assert torch.equal(fresh.num_calls, balancer.num_calls)
    assert torch.equal(fresh.num_samples, balancer.num_samples)
    assert fresh.history == balancer.history
    assert fresh.resets == balancer.resets == [(12, 1)]
    assert fresh.global_step == balancer.global_step == 15
    # The sampling schedule continues identically.
    assert run_scenario(fresh) == run_scenario(balancer)
    assert fresh.history == balancer.history


def test_dtype_conversion_keeps_accumulator_float32():
    balancer = GradientBalancer(2, num_groups=2)
    run_scenario(balancer, calls=4)
    before = balancer.accumulator.clone()
    for convert in (lambda m: m.to(torch.float64), lambda m: m.half(), lambda m: m.double(), lambda m: m.float()):
        convert(balancer)
        assert balancer.accumulator.dtype == torch.float32
        assert torch.equal(balancer.accumulator, before)
        assert balancer.num_calls.dtype == balancer.num_samples.dtype == torch.int64
    balancer.to("cpu")
    assert balancer.accumulator.device.type == "cpu"
    # float64 losses give a float64 total.
    x = torch.ones(2, dtype=torch.float64, requires_grad=True)
    assert balancer([x.sum(), x.pow(2).sum()], x, sample=False).dtype == torch.float64


def test_set_extra_state_rejects_other_num_losses():
    state = GradientBalancer(3).state_dict()
    with pytest.raises(ValueError, match="num_losses"):
        GradientBalancer(2).load_state_dict(state)
    with pytest.raises(TypeError, match="state"):
        GradientBalancer(2).set_extra_state([1, 2])
    with pytest.raises(ValueError, match="state"):
        GradientBalancer(2).set_extra_state({"num_losses": 2})


def test_reset():
    balancer = GradientBalancer(2, num_groups=2, interval=4, init_value=0.5)
    run_scenario(balancer, calls=6)
    acc0 = balancer.accumulator[0].clone()
    history_before = balancer.history
    balancer.reset(1)
    assert balancer.accumulator[1].tolist() == [0.5, 0.5]
    assert torch.equal(balancer.accumulator[0], acc0)
    assert balancer.num_calls.tolist() == [3, 0]
    assert balancer.num_samples.tolist() == [1, 0]
    assert balancer.history == history_before  # kept
    x = torch.ones(2, requires_grad=True)
    balancer([x.sum(), 3.0 * x.sum()], x, group=1)  # first call after the reset samples
    assert balancer.history[-1].group == 1 and balancer.history[-1].step == 6
    assert balancer.history[-1].weights == pytest.approx((1.0, 1.5 / 3.5))
    balancer.reset()
    assert balancer.accumulator.eq(0.5).all()
    assert balancer.num_calls.eq(0).all() and balancer.num_samples.eq(0).all()
    assert balancer.resets == [(6, 1), (7, None)]


def test_history_bounded_and_arrays():
    balancer = GradientBalancer(2, num_groups=2, interval=1, history_size=3)
    run_scenario(balancer, calls=10)
    assert [r.step for r in balancer.history] == [7, 8, 9]
    arrays = balancer.history_arrays()
    assert arrays["step"].tolist() == [7, 8, 9]
    assert arrays["group"].tolist() == [1, 0, 1]
    assert arrays["magnitudes"].shape == arrays["weights"].shape == (3, 2)
    assert arrays["weights"][-1].tolist() == pytest.approx(list(balancer.history[-1].weights))
    only = balancer.history_arrays(group=0)
    assert only["step"].tolist() == [8]
    # A longer stored history is cut to this balancer's history_size.
    big = GradientBalancer(2, num_groups=2, interval=1)
    run_scenario(big, calls=10)
    small = GradientBalancer(2, num_groups=2, history_size=3)
    small.load_state_dict(big.state_dict())
    assert [r.step for r in small.history] == [7, 8, 9]
    assert GradientBalancer(2, history_size=0).history_arrays()["weights"].shape == (0, 2)


def test_mapping_input_ordered_by_loss_names():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    named = GradientBalancer(2, loss_names=["a", "b"])
    plain = GradientBalancer(2)
    total_named = named({"b": 10.0 * x.sum(), "a": x.sum()}, x)
    total_plain = plain([x.sum(), 10.0 * x.sum()], x)
    assert total_named.item() == pytest.approx(total_plain.item())
    assert torch.equal(named.weights(), plain.weights())
    assert named.weights().tolist() == pytest.approx([1.0, 0.1])


def test_extra_repr():
    text = repr(GradientBalancer(3, 10, 5, accumulate="ema", momentum=0.5, loss_names=["a", "b", "c"]))
    for part in ("num_losses=3", "num_groups=10", "interval=5", "'ema'", "momentum=0.5", "norm='inf'", "['a', 'b'"):
        assert part in text


# --------------------------------------------------------------------------------------------- functional


@SETTINGS
@given(
    values=st.lists(st.one_of(st.just(0.0), st.floats(1e-6, 1e6)), min_size=1, max_size=6),
    perm_seed=st.integers(0, 2**16),
)
def test_balance_weights_against_loop_and_permutation(values, perm_seed):
    positive = [v for v in values if v > 0]
    expected = [min(positive) / v if v > 0 else 1.0 for v in values]
    got = balance_weights(torch.tensor(values, dtype=torch.float64))
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    assert got.max().item() == 1.0
    perm = list(range(len(values)))
    random.Random(perm_seed).shuffle(perm)
    permuted = balance_weights(torch.tensor([values[p] for p in perm], dtype=torch.float64))
    torch.testing.assert_close(permuted, got[perm])


def test_balance_weights_batched_and_all_zero():
    magnitudes = torch.tensor([[[2.0, 0.5, 8.0], [0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0], [0.0, 3.0, 6.0]]])
    expected = torch.tensor([[[0.25, 1.0, 0.0625], [1.0, 1.0, 1.0]], [[1.0, 1.0, 1.0], [1.0, 1.0, 0.5]]])
    torch.testing.assert_close(balance_weights(magnitudes), expected)
    assert balance_weights(magnitudes.half()).dtype == torch.float16


@SETTINGS
@given(
    lead=st.lists(st.integers(1, 2), min_size=0, max_size=2),
    channels=st.integers(1, 3),
    height=st.integers(1, 4),
    width=st.integers(1, 4),
    eps=st.sampled_from([0.0, 1e-6, 0.5]),
    zero_slice=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_normalize_image_gradients_against_loop(lead, channels, height, width, eps, zero_slice, seed):
    shape = (*lead, channels, height, width)
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 10.0
    if zero_slice:
        grad.reshape(-1, height, width)[0] = 0.0
    original = grad.clone()
    out = normalize_image_gradients(grad, eps)
    torch.testing.assert_close(out, reference_normalize(grad, eps))
    assert torch.equal(grad, original)  # returns a new tensor
    assert out.abs().max() <= 1.0
    if zero_slice:
        assert out.reshape(-1, height, width)[0].eq(0).all()


def test_normalize_image_gradients_zero_and_in_place_use():
    images = torch.randn(2, 3, 4, 4, requires_grad=True)
    images.grad = torch.zeros_like(images)
    images.grad[0, 1] = torch.arange(16.0).reshape(4, 4) - 5.0
    before = images.grad
    images.grad.copy_(normalize_image_gradients(images.grad, eps=0.0))
    assert images.grad is before
    assert images.grad[0, 1].abs().max() == 1.0
    assert images.grad[1].eq(0).all() and not images.grad.isnan().any()
    assert normalize_image_gradients(torch.zeros(0, 3, 4, 4)).shape == (0, 3, 4, 4)
    assert normalize_image_gradients(torch.ones(1, 2, 2, dtype=torch.float16)).dtype == torch.float16


# --------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_losses": 0}, ValueError, "num_losses"),
        ({"num_losses": 2.0}, TypeError, "num_losses"),
        ({"num_losses": True}, TypeError, "num_losses"),
        ({"num_losses": 2, "num_groups": 0}, ValueError, "num_groups"),
        ({"num_losses": 2, "interval": 0}, ValueError, "interval"),
        ({"num_losses": 2, "interval": 1.5}, TypeError, "interval"),
        ({"num_losses": 2, "init_value": -1.0}, ValueError, "init_value"),
        ({"num_losses": 2, "init_value": float("nan")}, ValueError, "init_value"),
        ({"num_losses": 2, "init_value": float("inf")}, ValueError, "init_value"),
        ({"num_losses": 2, "init_value": "0"}, TypeError, "init_value"),
        ({"num_losses": 2, "accumulate": "max"}, ValueError, "accumulate"),
        ({"num_losses": 2, "momentum": 1.0}, ValueError, "momentum"),
        ({"num_losses": 2, "momentum": -0.1}, ValueError, "momentum"),
        ({"num_losses": 2, "momentum": float("nan")}, ValueError, "momentum"),
        ({"num_losses": 2, "norm": "1"}, ValueError, "norm"),
        ({"num_losses": 2, "history_size": -1}, ValueError, "history_size"),
        ({"num_losses": 2, "loss_names": "ab"}, TypeError, "loss_names"),
        ({"num_losses": 2, "loss_names": ["a", 1]}, TypeError, r"loss_names\[1\]"),
        ({"num_losses": 2, "loss_names": ["a"]}, ValueError, "loss_names"),
        ({"num_losses": 2, "loss_names": ["a", "a"]}, ValueError, "loss_names"),
    ],
)
def test_constructor_rejects(kwargs, error, match):
    with pytest.raises(error, match=match):
        GradientBalancer(**kwargs)


def make_call_inputs():
    x = torch.ones(2, 3, requires_grad=True)
    return x, [x.sum(), x.pow(2).sum()]


def test_wrong_number_of_losses():
    x, losses = make_call_inputs()
    with pytest.raises(ValueError, match=r"`losses` must hold 3 losses .*got 2"):
        GradientBalancer(3)(losses, x)


@pytest.mark.parametrize(
    ("losses_fn", "error", "match"),
    [
        (lambda x: x.sum(), TypeError, "`losses`"),
        (lambda x: "ab", TypeError, "`losses`"),
        (lambda x: [x.sum(), x], ValueError, r"losses\[1\].*\(2, 3\)"),
        (lambda x: [x.sum(), 1.0], TypeError, r"losses\[1\]"),
        (lambda x: [x.sum(), torch.tensor(1)], TypeError, r"losses\[1\]"),
        (lambda x: [x.sum().detach(), x.sum()], ValueError, r"losses\[0\].*require grad"),
        (lambda x: {"a": x.sum(), "b": x.sum()}, TypeError, "loss_names"),
    ],
)
def test_bad_losses(losses_fn, error, match):
    x, _ = make_call_inputs()
    with pytest.raises(error, match=match):
        GradientBalancer(2)(losses_fn(x), x)


def test_mapping_missing_and_extra_keys():
    x, (a, b) = make_call_inputs()
    balancer = GradientBalancer(2, loss_names=["gm", "md"])
    with pytest.raises(ValueError, match=r"`losses`.*missing \['md'\]"):
        balancer({"gm": a}, x)
    with pytest.raises(ValueError, match=r"`losses`.*unexpected \['zz'\]"):
        balancer({"gm": a, "md": b, "zz": b}, x)


@pytest.mark.parametrize(
    ("target_fn", "error", "match"),
    [
        (lambda x: x.tolist(), TypeError, r"target\[0\]"),
        (lambda x: "x", TypeError, "`target`"),
        (lambda x: None, TypeError, "`target`"),
        (lambda x: [], ValueError, "`target`"),
        (lambda x: x.detach(), ValueError, "`target` must require grad"),
        (lambda x: [x, torch.ones(2)], ValueError, r"`target\[1\]` must require grad"),
        (lambda x: torch.ones(0, requires_grad=True), ValueError, "`target` must have at least one element"),
    ],
)
def test_bad_target(target_fn, error, match):
    x, losses = make_call_inputs()
    with pytest.raises(error, match=match):
        GradientBalancer(2)(losses, target_fn(x))


def test_loss_not_reaching_target():
    x, _ = make_call_inputs()
    other = torch.ones(3, requires_grad=True)
    balancer = GradientBalancer(2, loss_names=["gm", "md"])
    before = balancer_state(balancer)
    with pytest.raises(ValueError, match=r"losses\['md'\].*does not reach `target`"):
        balancer([x.sum(), other.sum()], x)
    assert_same_state(before, balancer_state(balancer))


@pytest.mark.parametrize("group", [-1, 3])
def test_group_out_of_range(group):
    x, losses = make_call_inputs()
    balancer = GradientBalancer(2, num_groups=3)
    for call in (lambda: balancer(losses, x, group), lambda: balancer.weights(group), lambda: balancer.reset(group)):
        with pytest.raises(ValueError, match=r"`group` must be in \[0, 2\].*got " + str(group)):
            call()
    with pytest.raises(ValueError, match="group"):
        balancer.history_arrays(group)


def test_group_and_sample_types():
    x, losses = make_call_inputs()
    balancer = GradientBalancer(2, num_groups=3)
    with pytest.raises(TypeError, match="`group`"):
        balancer(losses, x, 1.0)
    with pytest.raises(TypeError, match="`group`"):
        balancer(losses, x, True)
    with pytest.raises(TypeError, match="`sample`"):
        balancer(losses, x, sample=1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("sample", [None, False])
def test_non_finite_loss_leaves_state_unchanged(bad, sample):
    balancer = GradientBalancer(2, num_groups=3, loss_names=["gm", "md"])
    run_scenario(balancer, calls=4)
    before = balancer_state(balancer)
    x, (a, _) = make_call_inputs()
    with pytest.raises(ValueError, match=r"losses\['md'\].*not finite.*group 2"):
        balancer([a, bad * x.sum()], x, group=2, sample=sample)
    assert_same_state(before, balancer_state(balancer))


def test_non_finite_gradient_leaves_state_unchanged():
    balancer = GradientBalancer(2)
    x = torch.tensor([0.0, 1.0], requires_grad=True)
    before = balancer_state(balancer)
    # sqrt(0) = 0 is finite but its gradient is inf.
    with pytest.raises(ValueError, match=r"gradient of `losses\[1\]`.*not finite.*group 0"):
        balancer([x.sum(), x.sqrt().sum()], x)
    assert_same_state(before, balancer_state(balancer))


def test_backward_requires_leaf_target():
    x = torch.ones(3, requires_grad=True)
    y = x * 2.0
    with pytest.raises(ValueError, match="`target` must be a leaf"):
        GradientBalancer(2).backward([y.sum(), y.pow(2).sum()], y)


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ([1.0, 2.0], TypeError, "magnitudes"),
        (torch.tensor([1, 2]), TypeError, "magnitudes"),
        (torch.tensor(1.0), ValueError, "magnitudes"),
        (torch.zeros(2, 0), ValueError, "magnitudes"),
        (torch.tensor([1.0, -0.5]), ValueError, "magnitudes.*non-negative"),
        (torch.tensor([1.0, float("nan")]), ValueError, "magnitudes.*not finite"),
        (torch.tensor([1.0, float("inf")]), ValueError, "magnitudes.*not finite"),
    ],
)
def test_balance_weights_rejects(value, error, match):
    with pytest.raises(error, match=match):
        balance_weights(value)


@pytest.mark.parametrize(
    ("grad", "eps", "error", "match"),
    [
        (torch.ones(4, 4), 1e-6, ValueError, "`grad` must have at least 3 dimensions"),
        (torch.ones(1, 4, 4, dtype=torch.int64), 1e-6, TypeError, "grad"),
        ([[[1.0]]], 1e-6, TypeError, "grad"),
        (torch.full((1, 2, 2), float("nan")), 1e-6, ValueError, "`grad` is not finite"),
        (torch.ones(1, 2, 2), -1e-6, ValueError, "eps"),
        (torch.ones(1, 2, 2), float("nan"), ValueError, "eps"),
        (torch.ones(1, 2, 2), "1e-6", TypeError, "eps"),
    ],
)
def test_normalize_image_gradients_rejects(grad, eps, error, match):
    with pytest.raises(error, match=match):
        normalize_image_gradients(grad, eps)


def test_backward_and_forward_work_under_flop_counter_mode() -> None:
    # benchmarks/step.py counts sampling steps this way; `balancer(...)` itself cannot be (see `forward`'s docstring)
    from torch.utils.flop_counter import FlopCounterMode

    def run(counting: bool) -> torch.Tensor:
        x = torch.linspace(-1.0, 2.0, 12).reshape(4, 3).requires_grad_(True)
        balancer = GradientBalancer(num_losses=2)
        with FlopCounterMode(display=False) if counting else contextlib.nullcontext():
            balancer.backward([(x @ x.T).pow(2).sum(), 10.0 * x.sum()], x, sample=True)
            balancer.forward([(x @ x.T).pow(2).sum(), 10.0 * x.sum()], x, sample=True).backward()
        assert x.grad is not None
        return x.grad

    torch.testing.assert_close(run(counting=True), run(counting=False), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------
# sync(): the balancer merges its own state across ranks (public API only)


def _sync_calls(balancer: GradientBalancer, groups: list[int], rounds: int) -> None:
    for r in range(rounds):
        for g in groups:
            x = torch.full((3,), 1.0 + 0.1 * r, requires_grad=True)
            balancer.backward([(g + 1.0) * x.sum(), 1e-3 * (r + 1.0) * (x**2).sum() / (g + 1.0)], x, group=g)


def _sync_rank(rank: int, port: int, out: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        balancer = GradientBalancer(2, num_groups=5, interval=2, init_value=1e-6)
        mine = list(range(rank, 5, 2))
        _sync_calls(balancer, mine, rounds=3)
        balancer.sync(mine)
        _sync_calls(balancer, mine, rounds=2)
        before = copy.deepcopy(balancer.state_dict())
        try:
            balancer.sync([0, 1] if rank == 0 else [1, 3])  # group 1 claimed twice, 2 and 4 by nobody
        except ValueError as error:
            refused = str(error)
        else:
            refused = ""
        after = balancer.state_dict()
        unchanged = after["_extra_state"] == before["_extra_state"] and all(
            torch.equal(v, after[k]) for k, v in before.items() if isinstance(v, torch.Tensor)
        )
        balancer.sync(mine)
        torch.save({"state": balancer.state_dict(), "refused": refused, "unchanged": unchanged}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_sync_merges_two_ranks_into_the_single_process_state(tmp_path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_sync_rank, args=(port, str(tmp_path)), nprocs=2, join=True)
    single = GradientBalancer(2, num_groups=5, interval=2, init_value=1e-6)
    _sync_calls(single, list(range(5)), rounds=3)
    _sync_calls(single, list(range(5)), rounds=2)
    for rank in range(2):
        saved = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert "every one of the 5 groups must be owned by exactly one rank" in saved["refused"]
        assert saved["unchanged"]
        merged = GradientBalancer(2, num_groups=5, interval=2, init_value=1e-6)
        merged.load_state_dict(saved["state"])
        for name in ("accumulator", "num_samples", "num_calls"):
            assert torch.equal(getattr(merged, name), getattr(single, name)), name
        assert merged.global_step == single.global_step == 25
        assert sorted((r.group, r.magnitudes, r.weights) for r in merged.history) == sorted(
            (r.group, r.magnitudes, r.weights) for r in single.history
        )


@pytest.mark.parametrize(
    ("owned", "error", "match"),
    [
        ("01", TypeError, r"`owned_groups` must be an iterable of int group indices, got str"),
        (3, TypeError, r"`owned_groups` must be an iterable of int group indices, got int"),
        ([0, 1.0], TypeError, r"`owned_groups` must hold int group indices, got float"),
        ([0, 4], ValueError, r"`owned_groups` must hold groups in \[0, 3\] \(num_groups=4\), got 4"),
        ([True], ValueError, r"`owned_groups` must hold groups in \[0, 3\]"),
        ([2, 2], ValueError, r"`owned_groups` must list each group once, got \[2, 2\]"),
    ],
)
def test_sync_rejects_bad_owned_groups(owned, error, match) -> None:
    balancer = GradientBalancer(2, num_groups=4)
    with pytest.raises(error, match=match):
        balancer.sync(owned)
    balancer.sync(range(2))  # a plain process: a valid call changes nothing
    assert balancer.global_step == 0 and balancer.num_calls.sum() == 0
