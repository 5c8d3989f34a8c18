"""The pair contrastive loss, the mICL combination and the late-fusion gate equal values
computed by hand on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from core.errors import UserError
from train.fusion import LateFusion
from train.loss import notellm2_loss, pair_contrastive_loss
from train.model import NoteEmbeddings
from train.model_config import ModelConfig
from train.testing import single_thread, tiny_model_config


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def _by_hand(q: list[list[float]], d: list[list[float]], scale: float) -> float:
    """The loss written out with loops: 2N rows, candidates = every other note."""
    emb = q + d
    n = len(q)
    total = 0.0
    for i, row in enumerate(emb):
        target = i + n if i < n else i - n
        logits = {
            j: scale * sum(a * b for a, b in zip(row, other, strict=True)) for j, other in enumerate(emb)
        }
        denom = sum(math.exp(v) for j, v in logits.items() if j != i)
        total += -(logits[target] - math.log(denom))
    return total / (2 * n)


def test_closed_form_orthogonal_pairs() -> None:
    # q_i = d_i = e_i: each row sees its partner at similarity 1 and two notes at 0.
    e = torch.eye(2)
    s = 2.0
    loss = pair_contrastive_loss(e, e.clone(), torch.tensor(s), gather=False)
    assert loss.item() == pytest.approx(math.log(1 + 2 * math.exp(-s)), rel=1e-6)
    # one pair: the partner is the only candidate, so the loss is exactly 0
    one = torch.tensor([[0.6, 0.8]])
    assert pair_contrastive_loss(one, -one, torch.tensor(5.0), gather=False).item() == 0.0


def test_matches_loops_on_small_tensors() -> None:
    q = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]
    d = [[0.8, 0.6], [0.6, -0.8], [-1.0, 0.0]]
    scale = math.exp(1.5)
    got = pair_contrastive_loss(torch.tensor(q), torch.tensor(d), torch.tensor(scale), gather=False)
    assert got.item() == pytest.approx(_by_hand(q, d, scale), rel=1e-5)


def test_gradient_reaches_temperature_and_embeddings() -> None:
    t = torch.tensor(3.0, requires_grad=True)
    q = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    d = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    pair_contrastive_loss(q, d, t.exp()).backward()  # gather=True is a no-op without a process group
    assert t.grad is not None and q.grad is not None and d.grad is not None


def test_micl_combination_and_stats() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[0.6, 0.8], [0.8, -0.6]])
    qv = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    dv = torch.tensor([[0.6, 0.8], [-0.8, 0.6]])
    scale = torch.tensor(4.0)
    lm = _by_hand(q.tolist(), d.tolist(), 4.0)
    lv = _by_hand(qv.tolist(), dv.tolist(), 4.0)
    gate = torch.tensor(0.25)
    loss, stats = notellm2_loss(NoteEmbeddings(q, qv, gate), NoteEmbeddings(d, dv, gate), scale, (3.0, 1.0))
    assert loss.item() == pytest.approx((3 * lm + lv) / 4, rel=1e-5)
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in stats.values())  # no sync
    assert float(stats["loss_multimodal"]) == pytest.approx(lm, rel=1e-5)
    assert float(stats["loss_visual"]) == pytest.approx(lv, rel=1e-5)
    assert float(stats["gate"]) == 0.25 and float(stats["logit_scale"]) == 4.0
    # without a visual embedding the loss is the multimodal one
    loss_m, stats_m = notellm2_loss(NoteEmbeddings(q), NoteEmbeddings(d), scale)
    assert loss_m.item() == pytest.approx(lm, rel=1e-5) and "loss_visual" not in stats_m


def test_split_pairs_layout() -> None:
    out = NoteEmbeddings(torch.arange(8.0).view(4, 2), torch.zeros(4, 2), torch.tensor(0.5))
    q, d = out.split_pairs()
    assert q.multimodal.tolist() == [[0, 1], [2, 3]] and d.multimodal.tolist() == [[4, 5], [6, 7]]
    with pytest.raises(ValueError, match="even"):
        NoteEmbeddings(torch.zeros(3, 2)).split_pairs()


@pytest.mark.parametrize("residual", [True, False])
def test_gate_equals_hand_computed_values(residual: bool) -> None:
    """fused = z*h + (1-z)*v (the paper's equation), plus h with the residual option."""
    fusion = LateFusion(vision_width=1, hidden=2, residual=residual)
    with torch.no_grad():
        fusion.vision_proj.weight.copy_(torch.tensor([[1.0], [2.0]]))  # W_v
        fusion.gate.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.0, -0.25]]))  # W_g
    cls = torch.tensor([[3.0]])
    h = torch.tensor([[1.0, -1.0]])
    v = fusion.project(cls)
    assert v.tolist() == [[3.0, 6.0]]
    fused, z = fusion(h, v)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    z1, z2 = sig(1.0), sig(0.5 * -1.0 - 0.25 * 6.0)  # z = sigmoid(W_g [h; v])
    assert z[0].tolist() == pytest.approx([z1, z2], rel=1e-6)
    mixed = [z1 * 1 + (1 - z1) * 3, z2 * -1 + (1 - z2) * 6]
    expected = [mixed[0] + 1, mixed[1] - 1] if residual else mixed
    assert fused[0].tolist() == pytest.approx(expected, rel=1e-6)


def test_gate_init_is_xavier_normal_without_bias() -> None:
    torch.manual_seed(0)
    fusion = LateFusion(vision_width=32, hidden=256)
    assert fusion.gate.bias is None and fusion.vision_proj.bias is None
    std = math.sqrt(2.0 / (512 + 256))  # xavier normal: sqrt(2 / (fan_in + fan_out))
    assert fusion.gate.weight.std().item() == pytest.approx(std, rel=0.05)


def test_micl_weights_default_to_the_papers_nine_to_one() -> None:
    """Every NoteLLM-2 run the paper reports uses w_t:w_v = 9:1 (not the code's 1:1)."""
    assert ModelConfig().micl_weights == (9.0, 1.0)
    assert tiny_model_config(variant="notellm2").micl_weights == (9.0, 1.0)
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[0.6, 0.8], [0.8, -0.6]])
    qv = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    dv = torch.tensor([[0.6, 0.8], [-0.8, 0.6]])
    lm, lv = _by_hand(q.tolist(), d.tolist(), 4.0), _by_hand(qv.tolist(), dv.tolist(), 4.0)
    loss, _ = notellm2_loss(NoteEmbeddings(q, qv), NoteEmbeddings(d, dv), torch.tensor(4.0))
    assert loss.item() == pytest.approx((9 * lm + lv) / 10, rel=1e-5)
    with pytest.raises(UserError, match="micl_weights"):
        ModelConfig(micl_weights=(float("nan"), 1.0))


def test_logits_stay_fp32_under_bf16_autocast() -> None:
    """bf16 rounds a logit near 20 in steps of 0.125; the loss must not see that rounding."""
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(16, 64, generator=g), dim=-1)
    d = torch.nn.functional.normalize(q + 0.3 * torch.randn(16, 64, generator=g), dim=-1)
    scale = torch.tensor(math.exp(3.0))
    exact = pair_contrastive_loss(q, d, scale, gather=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = pair_contrastive_loss(q, d, scale, gather=False)
    assert under.dtype == torch.float32
    assert under.item() == pytest.approx(exact.item(), rel=1e-6)
