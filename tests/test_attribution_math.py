"""Integrated gradients, layer conductance and attention norms, each against a known answer.

Known answers come from closed forms (linear and quadratic toys, a hand-set one-layer
BERT) or from Captum, the reference implementation, run with the same grid and baseline.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from conftest import PAD, VOCAB, make_trainer, tiny_bert, tiny_distilbert, toy_dataset
from layerwatch.measures.attention.stats import punctuation_ids
from layerwatch.measures.attribution.accumulate import TOKEN_CLASSES, ShareSums
from layerwatch.measures.attribution.ig import CAPTUM_CONDUCTANCE_METHOD, CAPTUM_IG_METHOD, attribute, baseline_ids
from layerwatch.measures.attribution.layers import find_layers
from layerwatch.measures.attribution.norms import norm_maps, norm_shares, token_class_masks, value_norm_hooks
from layerwatch.measures.base import Batch
from layerwatch.model_utils import eager_attention, forward_hooks

CLS, SEP = 1, 2
IDS = torch.tensor([[CLS, 15, 27, 8, 61, 44, SEP, PAD, PAD]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0, 0]])
TYPES = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 0, 0]])


def lively(model: nn.Module, std: float = 0.3, seed: int = 0) -> nn.Module:
    """Random weights large enough for O(1) logits (the default init gives ~1e-3), norms kept as initialised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name.lower():
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def _hooks(model: nn.Module) -> dict:
    """Every hook of every module, by module name and hook id."""
    return {
        name: (tuple(m._forward_hooks), tuple(m._forward_pre_hooks), tuple(m._backward_hooks))
        for name, m in model.named_modules()
    }


def _warm(model: nn.Module) -> nn.Module:
    """transformers 5 installs its own output-recording hooks, for good, on the first forward that
    asks for attentions or hidden states; install them before counting hooks."""
    with torch.no_grad():
        model(input_ids=IDS, attention_mask=MASK, output_attentions=True, output_hidden_states=True)
    return model


def _capture_norms(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, classes: torch.Tensor) -> tuple:
    """The capture pass's norm hooks (the measurement's own) around one forward with eager attention:
    every layer's norm shares (layers, batch, heads, classes, 2) and ||f_h(x_j)|| by layer."""
    record: dict = {}
    with forward_hooks(value_norm_hooks(find_layers(model), record)), eager_attention(model), torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    fnorms = record["attribution_fnorms"]
    shares = torch.stack([norm_shares(a.detach(), fnorms[i].to(a.device), mask, classes) for i, a in enumerate(out.attentions)])
    return shares, fnorms


def _shares_in_eval_mode(model: nn.Module) -> torch.Tensor:
    """What the capture pass does with the norm hooks: one forward in eval mode, no grad, then the modes back."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        return _capture_norms(model, IDS, MASK, token_class_masks(IDS, MASK, [CLS], [SEP], [8]))[0]
    finally:
        for m, training in modes:
            m.training = training


# -- toy models with a closed form ---------------------------------------------------------------
class _ToyEmbeddings(nn.Module):
    def __init__(self, vocab: int, dim: int, tokens: int):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, dim)
        self.position = nn.Parameter(torch.randn(tokens, dim))

    def forward(self, input_ids):
        return self.word_embeddings(input_ids) + self.position[: input_ids.shape[1]]


class _Square(nn.Module):
    def forward(self, h):
        return h * h


class _ToyClassifier(nn.Module):
    """BERT-shaped toy: embeddings (word + position) -> layers -> masked mean -> linear head."""

    def __init__(self, layers: list[nn.Module], vocab=12, dim=4, tokens=6, classes=3):
        super().__init__()
        self.base = nn.Module()
        self.base.embeddings = _ToyEmbeddings(vocab, dim, tokens)
        self.base.encoder = nn.Module()
        self.base.encoder.layer = nn.ModuleList(layers)
        self.head = nn.Linear(dim, classes)
        self.config = SimpleNamespace(num_labels=classes, pad_token_id=0, num_attention_heads=1)

    @property
    def base_model(self):
        return self.base

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        h = self.base.embeddings(input_ids)
        for layer in self.base.encoder.layer:
            h = layer(h)
        m = attention_mask.to(h.dtype)[..., None]
        return SimpleNamespace(logits=self.head((h * m).sum(1) / m.sum(1)))


TOY_IDS = torch.tensor([[1, 5, 7, 3, 9, 0]])
TOY_MASK = torch.tensor([[1, 1, 1, 1, 1, 0]])
TOY_BASE = baseline_ids(TOY_IDS, [1], 0)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def test_linear_toy_equals_closed_form_and_is_complete():
    torch.manual_seed(0)
    model = _ToyClassifier([nn.Linear(4, 4), nn.Linear(4, 4)]).eval()
    target = 2
    r = attribute(model, TOY_IDS, TOY_MASK, target=target, steps=7, batch_size=3, baseline=TOY_BASE)

    emb = _np(model.base.embeddings.word_embeddings.weight)
    pos = _np(model.base.embeddings.position)[:6]
    A = [_np(l.weight) for l in model.base.encoder.layer]
    c = [_np(l.bias) for l in model.base.encoder.layer]
    w, w0 = _np(model.head.weight)[target], _np(model.head.bias)[target]
    m = TOY_MASK[0].double().numpy()

    def outputs(ids):  # the embedding output, then each layer's, in float64
        hs = [emb[ids[0].numpy()] + pos]
        for a, b in zip(A, c):
            hs.append(hs[-1] @ a.T + b)
        return hs

    hx, hb = outputs(TOY_IDS), outputs(TOY_BASE)
    f = lambda hs: (hs[-1] * m[:, None]).sum(0) / m.sum() @ w + w0
    # dF/dh for the last layer, then back through each linear layer: y = x A^T + b -> dF/dx = dF/dy A.
    grads = [np.outer(m / m.sum(), w)]
    for a in reversed(A):
        grads.insert(0, grads[0] @ a)
    conductance = np.stack([((x - b) * g).sum(1) for x, b, g in zip(hx, hb, grads)])
    ig = ((emb[TOY_IDS[0].numpy()] - emb[TOY_BASE[0].numpy()]) * grads[0]).sum(1)

    np.testing.assert_allclose(r.token_attributions, ig, atol=1e-6)
    np.testing.assert_allclose(r.conductance, conductance, atol=1e-6)
    assert r.f_x == pytest.approx(f(hx), abs=1e-6) and r.f_baseline == pytest.approx(f(hb), abs=1e-6)
    assert abs(r.f_x - r.f_baseline) > 0.1  # the check below is not about zeros
    assert r.completeness_gap < 1e-6
    np.testing.assert_array_less(r.conductance_gaps, 1e-6)
    assert r.token_attributions[[0, 5]].tolist() == [0.0, 0.0]  # [CLS] and padding are the baseline


def test_quadratic_toy_follows_the_left_riemann_rule_exactly():
    # F = sum_t m_t/n (e_t . e_t) w: the gradient is linear along the path, so the left sum
    # over k/steps, k < steps, misses the integral by exactly sum (w/n) |Δ_t|^2 / steps, and
    # the conductance of the squaring layer telescopes to F(x) - F(b) exactly.
    torch.manual_seed(1)
    model = _ToyClassifier([_Square()], classes=1).eval()
    with torch.no_grad():
        model.base.embeddings.position.zero_()
        model.head.weight.fill_(0.7)
        model.head.bias.zero_()
    steps = 5
    r = attribute(model, TOY_IDS, TOY_MASK, target=0, steps=steps, batch_size=4, baseline=TOY_BASE)
    emb = _np(model.base.embeddings.word_embeddings.weight)
    ex, eb = emb[TOY_IDS[0].numpy()], emb[TOY_BASE[0].numpy()]
    m = TOY_MASK[0].double().numpy() / 5
    delta = ex - eb
    # d/dα of F at e_b + αΔ is sum_t 2 (w m_t) (e_b + αΔ)_t . Δ_t; left sum of it:
    ig = 2 * 0.7 * m * ((eb * delta).sum(1) + (delta * delta).sum(1) * (steps - 1) / (2 * steps))
    np.testing.assert_allclose(r.token_attributions, ig, atol=1e-6)
    np.testing.assert_allclose(r.conductance[0], ig, atol=1e-6)  # the embedding output is the word path here
    exact = 0.7 * m * ((ex * ex).sum(1) - (eb * eb).sum(1))
    np.testing.assert_allclose(r.conductance[1], exact, atol=1e-6)
    gap = abs(0.7 * (m * (delta * delta).sum(1)).sum() / steps)
    assert gap > 1e-3
    assert r.completeness_gap == pytest.approx(gap, abs=1e-6)


# -- tiny transformers --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live_bert():
    return lively(tiny_bert())


@pytest.fixture(scope="module")
def live_distilbert():
    return lively(tiny_distilbert())


def _types(model):
    return TYPES if find_layers(model).family == "bert" else None


@pytest.mark.parametrize("name", ["live_bert", "live_distilbert"])
def test_ends_of_the_path_are_the_model_on_input_and_baseline(name, request):
    # Position and type embeddings added once (not twice, captum #506): F(x) and F(baseline)
    # are the plain model's logits.
    model = request.getfixturevalue(name)
    types = _types(model)
    base = baseline_ids(IDS, [CLS, SEP], PAD)
    r = attribute(model, IDS, MASK, types, target=1, steps=4, baseline=base)
    kw = {} if types is None else {"token_type_ids": types}
    with torch.no_grad():
        fx = model(input_ids=IDS, attention_mask=MASK, **kw).logits[0, 1].item()
        fb = model(input_ids=base, attention_mask=MASK, **kw).logits[0, 1].item()
    assert abs(fx - fb) > 0.1
    assert r.f_x == pytest.approx(fx, abs=1e-5) and r.f_baseline == pytest.approx(fb, abs=1e-5)


@pytest.mark.parametrize("name, target", [("live_bert", 0), ("live_distilbert", 1)])
def test_conductance_of_every_layer_sums_to_the_logit_difference_at_64_steps(name, target, request):
    # The targets with a logit difference well above the O(1 / steps) error of the rule.
    model = request.getfixturevalue(name)
    r = attribute(model, IDS, MASK, _types(model), target=target, steps=64, batch_size=32, special_ids=[CLS, SEP])
    diff = r.f_x - r.f_baseline
    assert abs(diff) > 0.1
    assert r.conductance.shape == (3, IDS.shape[1])
    np.testing.assert_array_less(r.conductance_gaps, 0.02 * abs(diff))
    assert r.completeness_gap < 0.02 * abs(diff)


@pytest.mark.parametrize("name", ["live_bert", "live_distilbert"])
def test_equals_captum_layer_conductance_and_layer_integrated_gradients(name, request):
    from captum.attr import LayerConductance, LayerIntegratedGradients

    model = request.getfixturevalue(name)
    types = _types(model)
    h = find_layers(model)
    steps, target = 12, 1
    base = baseline_ids(IDS, [CLS, SEP], PAD)
    r = attribute(model, IDS, MASK, types, target=target, steps=steps, batch_size=5, baseline=base)
    kw = {} if types is None else {"token_type_ids": types}

    def on_ids(ids, mask):
        return model(input_ids=ids, attention_mask=mask, **kw).logits

    lig = LayerIntegratedGradients(on_ids, h.word_embeddings)
    expected = lig.attribute(IDS, base, target=target, additional_forward_args=(MASK,), n_steps=steps,
                             method=CAPTUM_IG_METHOD).sum(-1)[0].detach().numpy()
    assert np.abs(expected).max() > 0.05
    np.testing.assert_allclose(r.token_attributions, expected, atol=1e-4)

    # Captum's LayerConductance interpolates the inputs of its forward function: here the
    # word embeddings, handed to the model as inputs_embeds (it adds positions and types).
    def on_embeddings(emb, mask):
        return model(inputs_embeds=emb, attention_mask=mask, **kw).logits

    with torch.no_grad():
        ex, eb = h.word_embeddings(IDS), h.word_embeddings(base)
    for row, layer in enumerate([h.embeddings, *h.layers]):
        lc = LayerConductance(on_embeddings, layer)
        c = lc.attribute(ex, eb, target=target, additional_forward_args=(MASK,), n_steps=steps,
                         method=CAPTUM_CONDUCTANCE_METHOD)
        c = (c[0] if isinstance(c, tuple) else c).sum(-1)[0].detach().numpy()
        assert np.abs(c).max() > 0.05
        np.testing.assert_allclose(r.conductance[row], c, atol=1e-4, err_msg=f"row {row}")


def test_chunking_does_not_change_the_result(live_bert):
    runs = [attribute(live_bert, IDS, MASK, TYPES, target=1, steps=9, batch_size=b, special_ids=[CLS, SEP])
            for b in (1, 4, 10, 64)]
    for r in runs[1:]:
        np.testing.assert_allclose(r.token_attributions, runs[0].token_attributions, atol=1e-6)
        np.testing.assert_allclose(r.conductance, runs[0].conductance, atol=1e-6)
        assert r.f_x == pytest.approx(runs[0].f_x, abs=1e-6)


def test_target_none_explains_the_predicted_class(live_bert):
    with torch.no_grad():
        predicted = int(live_bert(input_ids=IDS, attention_mask=MASK, token_type_ids=TYPES).logits[0].argmax())
    r = attribute(live_bert, IDS, MASK, TYPES, target=None, steps=4, special_ids=[CLS, SEP])
    assert r.target == predicted
    assert r.steps == 4 and r.method == "riemann"
    assert set(r.to_arrays()) >= {"token_attributions", "conductance", "f_x", "f_baseline", "completeness_gap"}


def test_works_under_no_grad_and_inference_mode(live_bert):
    ref = attribute(live_bert, IDS, MASK, TYPES, target=1, steps=4, special_ids=[CLS, SEP])
    with torch.no_grad():
        a = attribute(live_bert, IDS, MASK, TYPES, target=1, steps=4, special_ids=[CLS, SEP])
    with torch.inference_mode():
        ids, mask, types = IDS.clone(), MASK.clone(), TYPES.clone()  # inference tensors
        b = attribute(live_bert, ids, mask, types, target=1, steps=4, special_ids=[CLS, SEP])
    for r in (a, b):
        np.testing.assert_array_equal(r.conductance, ref.conductance)
    assert torch.is_grad_enabled()


# -- no side effect --------------------------------------------------------------------------
def _rng_states():
    return random.getstate(), np.random.get_state()[1].copy(), torch.random.get_rng_state().clone()


def test_no_side_effect_on_grads_flags_modes_rng_and_hooks():
    model = _warm(lively(tiny_bert(seed=3)))
    model.train()
    model.bert.encoder.layer[0].eval()  # a mixed state must come back as it was
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    out = model(input_ids=IDS, attention_mask=MASK, labels=torch.tensor([1]))
    out.loss.backward()
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    fired = []
    for p in model.parameters():
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(lambda p: fired.append("accumulate"))  # what DDP hangs on
            p.register_hook(lambda g: fired.append("grad"))
    hooks = _hooks(model)
    _shares_in_eval_mode(model)  # its forward is the caller's; the hooks add nothing to it
    # A module that draws random numbers even in eval mode: the draws must not show outside.
    def draw(*_):
        torch.rand(1), random.random(), np.random.rand()

    draws = model.classifier.register_forward_pre_hook(draw)
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    before = _rng_states()

    attribute(model, IDS, MASK, TYPES, target=0, steps=4, batch_size=3, special_ids=[CLS, SEP])
    norm_maps(model, IDS, MASK)

    after = _rng_states()
    draws.remove()
    assert fired == []
    for n, p in model.named_parameters():
        assert (p.grad is None) == (grads[n] is None), n
        if p.grad is not None:
            assert torch.equal(p.grad, grads[n]), n
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert after[0] == before[0] and np.array_equal(after[1], before[1]) and torch.equal(after[2], before[2])
    assert _hooks(model) == hooks


def test_runs_in_eval_mode_whatever_the_callers_mode():
    model = lively(tiny_bert(seed=3))  # dropout 0.1: a train-mode pass would differ from run to run
    ref = attribute(model.eval(), IDS, MASK, TYPES, target=0, steps=4, special_ids=[CLS, SEP])
    ref_maps = norm_maps(model, IDS, MASK)
    model.train()
    for _ in range(2):
        r = attribute(model, IDS, MASK, TYPES, target=0, steps=4, special_ids=[CLS, SEP])
        np.testing.assert_array_equal(r.conductance, ref.conductance)
        np.testing.assert_array_equal(norm_maps(model, IDS, MASK).weighted, ref_maps.weighted)
    assert model.training


def test_hooks_modes_and_attention_implementation_restored_when_the_forward_raises(monkeypatch):
    model = _warm(tiny_bert()).train()
    model.set_attn_implementation("sdpa")
    hooks = _hooks(model)

    def broken(*args, **kwargs):
        raise RuntimeError("layer exploded")

    monkeypatch.setattr(model.bert.encoder.layer[1], "forward", broken)
    with pytest.raises(RuntimeError, match="exploded"):
        attribute(model, IDS, MASK, target=0, steps=4, special_ids=[CLS, SEP])
    assert _hooks(model) == hooks and model.training and all(m.training for m in model.modules())
    with pytest.raises(RuntimeError, match="exploded"):
        norm_maps(model, IDS, MASK)
    assert _hooks(model) == hooks and model.training
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(RuntimeError, match="exploded"):
        with forward_hooks(value_norm_hooks(find_layers(model), {})), eager_attention(model):
            model(input_ids=IDS, attention_mask=MASK)
    assert _hooks(model) == hooks and model.config._attn_implementation == "sdpa"


class _Recorder:
    """A TrainerCallback that records losses and, optionally, runs the measurements after each step."""

    def __init__(self, measure: bool):
        self.measure, self.losses, self.calls = measure, [], 0

    def __getattr__(self, name):  # the other TrainerCallback events do nothing
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])

    def on_step_end(self, args, state, control, model=None, **kw):
        if not self.measure:
            return
        self.calls += 1
        attribute(model, IDS, MASK, TYPES, target=1, steps=3, batch_size=2, special_ids=[CLS, SEP])
        _shares_in_eval_mode(model)
        norm_maps(model, IDS, MASK)


def test_three_trainer_steps_bit_identical_with_and_without_the_measurements(tmp_path):
    results = []
    for measure in (False, True):
        model = tiny_bert(seed=0)  # dropout on: any RNG draw would change the losses
        rec = _Recorder(measure)
        trainer = make_trainer(model, toy_dataset(48, seed=0), [rec], tmp_path / str(measure), max_steps=3,
                               logging_strategy="steps", logging_steps=1)
        trainer.train()
        results.append((rec, {k: v.clone() for k, v in model.state_dict().items()}))
    (plain, w0), (measured, w1) = results
    assert measured.calls == 3 and len(plain.losses) == 3
    assert measured.losses == plain.losses
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)


# -- attention norms ------------------------------------------------------------------------
def _hand_set_bert(scales=(2.0, 3.0)):
    """One layer, hidden 4, two heads: W_V = I, b_V = 0, W_O = diag(s_0, s_0, s_1, s_1), Q = K = 0."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=4, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=8, max_position_embeddings=16, pad_token_id=PAD, num_labels=2)
    model = BertForSequenceClassification(cfg).eval()
    att = model.bert.encoder.layer[0].attention
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight.normal_()
        for lin in (att.self.query, att.self.key):
            lin.weight.zero_(), lin.bias.zero_()
        att.self.value.weight.copy_(torch.eye(4))
        att.self.value.bias.zero_()
        att.output.dense.weight.copy_(torch.diag(torch.tensor([scales[0]] * 2 + [scales[1]] * 2)))
        att.output.dense.bias.fill_(0.7)  # f(x) leaves the output bias out
    return model


def test_norms_on_a_hand_set_bert_equal_the_closed_form():
    scales = (2.0, 3.0)
    model = _hand_set_bert(scales)
    maps = norm_maps(model, IDS, MASK)
    with torch.no_grad():
        x = model(input_ids=IDS, attention_mask=MASK, output_hidden_states=True).hidden_states[0][0].double().numpy()
    real = MASK[0].bool().numpy()
    n = real.sum()
    fnorm = np.stack([s * np.linalg.norm(x[:, 2 * h : 2 * h + 2], axis=1) for h, s in enumerate(scales)])
    alpha = np.where(real, 1.0 / n, 0.0)[None, None, :].repeat(2, 0).repeat(len(real), 1)  # uniform over real keys
    mixed = np.stack([s * np.linalg.norm(x[real, 2 * h : 2 * h + 2].mean(0)) * np.ones(len(real))
                      for h, s in enumerate(scales)])
    assert maps.fnorm.shape == (1, 2, 9) and maps.weighted.shape == (1, 2, 9, 9)
    np.testing.assert_allclose(maps.fnorm[0], fnorm, rtol=1e-5)
    np.testing.assert_allclose(maps.attention[0], alpha, atol=1e-6)
    np.testing.assert_allclose(maps.weighted[0], alpha * fnorm[:, None, :], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(maps.mixed[0], mixed, rtol=1e-5)


def test_shortcut_equals_explicit_norm_of_alpha_times_f_and_the_triangle_inequality(live_bert):
    # On random weights: f_h(x_j) built from the layer inputs, the full (T, T, hidden)
    # tensor alpha_ij f_h(x_j), and its norms.
    maps = norm_maps(live_bert, IDS, MASK, TYPES)
    with torch.no_grad():
        out = live_bert(input_ids=IDS, attention_mask=MASK, token_type_ids=TYPES, output_hidden_states=True)
    assert maps.attention.shape == (2, 2, 9, 9)
    for layer in range(2):
        att = live_bert.bert.encoder.layer[layer].attention
        x = out.hidden_states[layer][0].double()
        v = x @ att.self.value.weight.detach().double().T + att.self.value.bias.detach().double()
        wo = att.output.dense.weight.detach().double()
        alpha = torch.from_numpy(maps.attention[layer]).double()
        for h in range(2):
            f = v[:, 8 * h : 8 * h + 8] @ wo[:, 8 * h : 8 * h + 8].T  # head dim 8
            explicit = torch.linalg.vector_norm(alpha[h][:, :, None] * f[None, :, :], dim=-1)  # (T, T)
            np.testing.assert_allclose(maps.fnorm[layer, h], torch.linalg.vector_norm(f, dim=-1).numpy(), rtol=1e-4)
            np.testing.assert_allclose(maps.weighted[layer, h], explicit.numpy(), rtol=1e-4, atol=1e-6)
            mixed = torch.linalg.vector_norm(alpha[h] @ f, dim=-1).numpy()
            np.testing.assert_allclose(maps.mixed[layer, h], mixed, rtol=1e-4)
            assert np.all(maps.mixed[layer, h] <= maps.weighted[layer, h].sum(-1) * (1 + 1e-6))
            assert np.any(maps.mixed[layer, h] < 0.99 * maps.weighted[layer, h].sum(-1))  # strict somewhere
    # the probabilities are softmax(q k^T / sqrt(d)) over the real keys, from the same layer inputs
    att = live_bert.bert.encoder.layer[1].attention.self
    x = out.hidden_states[1][0].detach().double()
    q = (x @ att.query.weight.detach().double().T + att.query.bias.detach().double()).view(9, 2, 8).transpose(0, 1)
    k = (x @ att.key.weight.detach().double().T + att.key.bias.detach().double()).view(9, 2, 8).transpose(0, 1)
    scores = (q @ k.transpose(1, 2)) / 8**0.5 + torch.where(MASK[0].bool(), 0.0, -torch.inf).double()
    np.testing.assert_allclose(maps.attention[1], torch.softmax(scores, -1).numpy(), atol=1e-6)


def test_norm_shares_on_hand_built_tensors():
    # One row, one head, tokens [CLS, word, SEP, pad]; queries 0..2 are real.
    attn = torch.tensor([[[[0.5, 0.3, 0.2, 0.0],
                           [0.1, 0.6, 0.3, 0.0],
                           [0.2, 0.2, 0.6, 0.0],
                           [0.4, 0.4, 0.2, 0.0]]]])
    fnorm = torch.tensor([[[1.0, 2.0, 0.5, 9.0]]])
    mask = torch.tensor([[1, 1, 1, 0]])
    classes = torch.tensor([[[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 1]]], dtype=torch.bool)
    out = norm_shares(attn, fnorm, mask, classes)
    assert out.shape == (1, 1, 4, 2)
    weight = np.array([(0.5 + 0.1 + 0.2) / 3, (0.2 + 0.3 + 0.6) / 3, 0.0, (0.3 + 0.6 + 0.2) / 3])
    rows = [(0.5, 0.6, 0.1), (0.1, 1.2, 0.15), (0.2, 0.4, 0.3)]  # alpha_ij ||f_j|| for cls, word, sep
    norm = np.array([np.mean([r[k] / sum(r) for r in rows]) for k in (0, 2)])
    np.testing.assert_allclose(out[0, 0, :, 0].numpy(), weight, atol=1e-6)
    np.testing.assert_allclose(out[0, 0, [0, 1], 1].numpy(), norm, atol=1e-6)
    assert out[0, 0, 2, 1] == 0 and out[0, 0, 3, 1].item() == pytest.approx(np.mean([r[1] / sum(r) for r in rows]))
    np.testing.assert_allclose(out[0, 0].sum(0).numpy(), [1.0, 1.0], atol=1e-6)
    # a second row is reduced on its own
    two = norm_shares(attn.repeat(2, 1, 1, 1), torch.cat([fnorm, fnorm * 0 + 1]), mask.repeat(2, 1), classes.repeat(2, 1, 1))
    np.testing.assert_allclose(two[0].numpy(), out[0].numpy(), atol=1e-7)
    np.testing.assert_allclose(two[1, 0, :, 1].numpy(), weight, atol=1e-6)  # equal norms: norm share = weight share


def test_norm_hooks_during_a_batched_forward_agree_with_norm_maps(live_bert):
    ids = torch.cat([IDS, torch.tensor([[CLS, 30, 8, 40, SEP, PAD, PAD, PAD, PAD]])])
    mask = (ids != PAD).long()
    classes = token_class_masks(ids, mask, [CLS], [SEP], [8])
    shares, fnorms = _capture_norms(live_bert, ids, mask, classes)
    assert shares.shape == (2, 2, 2, len(TOKEN_CLASSES), 2)
    np.testing.assert_allclose(shares.sum(3).numpy(), 1.0, atol=1e-5)
    for row in range(2):
        n = int(mask[row].sum())
        maps = norm_maps(live_bert, ids[row : row + 1, :n], mask[row : row + 1, :n])
        np.testing.assert_allclose(fnorms[1][row, :, :n].numpy(), maps.fnorm[1], rtol=1e-5)
        one = norm_shares(torch.from_numpy(maps.attention[1])[None], torch.from_numpy(maps.fnorm[1])[None],
                          mask[row : row + 1, :n], classes[row : row + 1, :, :n])
        np.testing.assert_allclose(shares[1, row].numpy(), one[0].numpy(), atol=1e-5)


def test_norms_on_distilbert(live_distilbert):
    maps = norm_maps(live_distilbert, IDS, MASK)
    with torch.no_grad():
        out = live_distilbert(input_ids=IDS, attention_mask=MASK, output_hidden_states=True)
    att = live_distilbert.distilbert.transformer.layer[0].attention
    x = out.hidden_states[0][0]
    f = (x @ att.v_lin.weight.T + att.v_lin.bias)[:, 8:] @ att.out_lin.weight[:, 8:].T
    np.testing.assert_allclose(maps.fnorm[0, 1], torch.linalg.vector_norm(f, dim=-1).detach().numpy(), rtol=1e-4)


# -- parts, baselines, classes ----------------------------------------------------------------
def test_find_layers_for_bert_and_distilbert(live_bert, live_distilbert):
    h = find_layers(live_bert)
    assert h.family == "bert" and h.num_heads == 2 and h.num_layers == 2
    assert h.word_embeddings is live_bert.bert.embeddings.word_embeddings and h.embeddings is live_bert.bert.embeddings
    assert h.values[1] is live_bert.bert.encoder.layer[1].attention.self.value
    assert h.outputs[0] is live_bert.bert.encoder.layer[0].attention.output.dense
    d = find_layers(live_distilbert)
    assert d.family == "distilbert" and d.layers[1] is live_distilbert.distilbert.transformer.layer[1]
    assert d.values[0] is live_distilbert.distilbert.transformer.layer[0].attention.v_lin
    assert find_layers(live_bert.bert).layers == h.layers  # a base model works too


def test_roberta_keeps_the_inputs_positions_and_equals_captum():
    # RoBERTa counts positions over non-padding ids, so the baseline (padding) keeps the
    # input's positions only because the model runs on the input's ids along the path.
    from captum.attr import LayerIntegratedGradients
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=40, pad_token_id=PAD, num_labels=2,
                        type_vocab_size=1)
    model = lively(RobertaForSequenceClassification(cfg))
    base = baseline_ids(IDS, [CLS, SEP], PAD)
    r = attribute(model, IDS, MASK, target=1, steps=8, baseline=base)
    positions = torch.cumsum(IDS.ne(PAD), 1) * IDS.ne(PAD) + PAD  # the input's, as RoBERTa counts them
    with torch.no_grad():
        fx = model(input_ids=IDS, attention_mask=MASK).logits[0, 1].item()
        fb = model(input_ids=base, attention_mask=MASK, position_ids=positions).logits[0, 1].item()
        moved = model(input_ids=base, attention_mask=MASK).logits[0, 1].item()
    assert r.f_x == pytest.approx(fx, abs=1e-5) and r.f_baseline == pytest.approx(fb, abs=1e-5)
    assert abs(moved - fb) > 1e-3  # model(baseline ids) alone would have moved the positions
    lig = LayerIntegratedGradients(lambda i, m: model(input_ids=i, attention_mask=m).logits,
                                   find_layers(model).word_embeddings)
    expected = lig.attribute(IDS, base, target=1, additional_forward_args=(MASK,), n_steps=8,
                             method=CAPTUM_IG_METHOD).sum(-1)[0].detach().numpy()
    np.testing.assert_allclose(r.token_attributions, expected, atol=1e-4)
    assert find_layers(model).family == "bert" and len(norm_maps(model, IDS, MASK).fnorm) == 2


def test_electra_is_found():
    from transformers import ElectraConfig, ElectraForSequenceClassification

    model = ElectraForSequenceClassification(ElectraConfig(
        vocab_size=VOCAB, embedding_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=40, pad_token_id=PAD)).eval()
    h = find_layers(model)
    assert h.embeddings is model.electra.embeddings and len(h.layers) == 2 and h.num_heads == 2
    r = attribute(model, IDS, MASK, target=0, steps=4, special_ids=[CLS, SEP])
    assert r.conductance.shape == (3, 9)


def test_unsupported_model_is_named_in_the_error():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    gpt2 = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=20, n_positions=16))
    with pytest.raises(ValueError, match="GPT2ForSequenceClassification.*BERT family.*DistilBERT"):
        find_layers(gpt2)
    with pytest.raises(ValueError, match="Linear"):
        attribute(nn.Linear(2, 2), IDS, MASK, target=0, special_ids=[CLS])

    class Wrapper(nn.Module):  # what DDP looks like from outside
        def __init__(self, module):
            super().__init__()
            self.module = module

    with pytest.raises(ValueError, match=r"Wrapper .*pass the wrapped model \(model.module\)"):
        find_layers(Wrapper(tiny_bert()))


def test_baseline_ids_keeps_special_tokens_and_positions():
    ids = torch.tensor([[101, 7, 8, 102, 9, 102, 0]])
    np.testing.assert_array_equal(baseline_ids(ids, [101, 102], 0).numpy(), [[101, 0, 0, 102, 0, 102, 0]])
    assert baseline_ids(ids, [], 5).tolist() == [[5] * 7]


def test_token_class_masks_and_punctuation_ids():
    vocab = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, ".": 3, "##,": 4, "!?": 5, "hello": 6, "##s": 7, "\u0120...": 8, "#": 9}
    tokenizer = SimpleNamespace(get_vocab=lambda: vocab)
    assert sorted(punctuation_ids(tokenizer)) == [3, 4, 5, 8, 9]
    ids = torch.tensor([[1, 6, 3, 7, 2, 0]])
    masks = token_class_masks(ids, (ids != 0).long(), [1], [2], punctuation_ids(tokenizer))
    assert masks.shape == (1, 4, 6)
    assert masks[0].int().tolist() == [[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0], [0, 0, 1, 0, 0, 0], [0, 1, 0, 1, 0, 0]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 1}, "steps=1 must be an integer >= 2"),
        ({"batch_size": 0}, "batch_size=0 must be an integer >= 1"),
        ({"target": 2}, "target=2 must be a class index below num_labels=2"),
        ({"target": -1}, "target=-1"),
        ({"input_ids": IDS.repeat(2, 1)}, r"input_ids has shape \(2, 9\); pass one example"),
        ({"input_ids": IDS.float()}, "input_ids has dtype torch.float32"),
        ({"attention_mask": MASK[:, :4]}, r"attention_mask has shape \(1, 4\)"),
        ({"baseline": None, "special_ids": None}, "special_ids="),
    ],
)
def test_bad_input_names_the_parameter_and_the_fix(live_bert, kwargs, match):
    args = {"input_ids": IDS, "attention_mask": MASK, "target": 0, "baseline": baseline_ids(IDS, [1, 2], 0)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        attribute(live_bert, args.pop("input_ids"), args.pop("attention_mask"), **args)


def test_norm_shares_bad_shapes_and_missing_forward(live_bert):
    with pytest.raises(ValueError, match=r"fnorm has shape \(1, 2, 3\)"):
        norm_shares(torch.ones(1, 2, 4, 4), torch.ones(1, 2, 3), torch.ones(1, 4), torch.ones(1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="class_masks has shape"):
        norm_shares(torch.ones(1, 2, 4, 4), torch.ones(1, 2, 4), torch.ones(1, 4), torch.ones(1, 4, dtype=torch.bool))
    # The capture pass's accumulator: a batch without the hooks' norms, or without attention weights.
    record: dict = {}
    with torch.no_grad():
        out = live_bert(input_ids=IDS, attention_mask=MASK, output_attentions=True)
    batch = Batch(rows=np.arange(1), inputs={"input_ids": IDS}, mask=MASK, outputs=out, hooked=record)
    with pytest.raises(ValueError, match="need the attention weights and every layer's value projection"):
        ShareSums(None, 2, ([CLS], [SEP], [8])).update(batch)
    with forward_hooks(value_norm_hooks(find_layers(live_bert), record)), torch.no_grad():
        out = live_bert(input_ids=IDS, attention_mask=MASK)
    batch = Batch(rows=np.arange(1), inputs={"input_ids": IDS}, mask=MASK, outputs=out, hooked=record)
    with pytest.raises(ValueError, match="need the attention weights and every layer's value projection"):
        ShareSums(None, 2, ([CLS], [SEP], [8])).update(batch)
