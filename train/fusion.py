"""Late fusion: a learned per-dimension gate mixes the image's global feature back into an
LLM embedding (NoteLLM-2's late fusion).

    v     = W_v · cls                      W_v: vision width -> d, no bias
    z     = sigmoid(W_g · [h ; v])         W_g: 2d -> d, no bias, Xavier-normal init
    fused = z * h + g * (1 - z) * v  (+ h)   per dimension; g = 1 in the paper

`h` is an LLM embedding (the multimodal one, and with mICL the visual one too; the same
gate serves both). The gate re-injects the image's global feature that the LLM tends
to drop.

`image_gain` g (1 by default, the paper's equation) weighs the image share; a run with
`fusion_calibrate` chooses it on the val split after training (train.fusion_calibration).

`residual` (off by default) adds `h` back: `z * h + (1 - z) * v + h`. The authors' first
release did this; their "fix gate" commit removed it, so their code now runs the
paper's equation, as i2i does by default. Without it, the gate decides per dimension
how much of `h` survives, and an LLM state's few huge dimensions (SmolLM2: one of |47|
in a state of norm 59) can saturate `W_g · [h ; v]` the same way for every note; the
residual keeps at least `h` whatever the gate does (benchmarks/QUALITY.md, "The
late-fusion residual"). It needs mICL: late fusion alone with it lost to basic (README,
"Before the pre-alignment").
"""

from __future__ import annotations

import torch
from torch import nn


class LateFusion(nn.Module):
    def __init__(
        self,
        vision_width: int,
        hidden: int,
        init_gain: float = 1.0,
        residual: bool = False,
        image_gain: float = 1.0,
    ):
        super().__init__()
        self.residual = residual
        self.image_gain = image_gain  # g: the image share's weight (ModelConfig.fusion_image_gain)
        self.vision_proj = nn.Linear(vision_width, hidden, bias=False)  # W_v
        self.gate = nn.Linear(2 * hidden, hidden, bias=False)  # W_g
        nn.init.xavier_normal_(self.gate.weight)
        with torch.no_grad():  # W_v: PyTorch's default init, scaled (ModelConfig.fusion_init_gain)
            self.vision_proj.weight.mul_(init_gain)

    def project(self, cls: torch.Tensor) -> torch.Tensor:
        """`v = W_v · cls`: (B, Dv) -> (B, d)."""
        return self.vision_proj(cls)

    def shares(self, h: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The two summands of the fused embedding and the gate: `h`, `v`: (B, d) ->
        (LLM share z * h (+ h), image share g * (1 - z) * v, gate z), each (B, d)."""
        z = torch.sigmoid(self.gate(torch.cat([h, v], dim=-1)))  # (B, d)
        llm_share = (1 + z) * h if self.residual else z * h
        image_share = (1 - z) * v if self.image_gain == 1.0 else self.image_gain * (1 - z) * v
        return llm_share, image_share, z

    def forward(self, h: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`h`, `v`: (B, d) -> (fused (B, d), gate z (B, d))."""
        llm_share, image_share, z = self.shares(h, v)
        return llm_share + image_share, z
