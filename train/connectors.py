"""Connectors: frozen image features -> `num_query_tokens` visual tokens of the LLM width.

Both take `cls (B, Dv)` and `tokens (B, T, Dv)` from a `VisionEncoder` and return
`(B, num_query_tokens, llm_hidden)`.

- `QFormerConnector` (paper default): a randomly initialised BLIP-2 Q-Former
  (`transformers.Blip2QFormerModel`): `num_query_tokens` learned queries cross-attend
  to [CLS; patch tokens]; its outputs go through `mlp2x_gelu` into the LLM width.
- `MLPConnector` (LLaVA-style baseline): patch tokens average-pooled along the sequence
  to `num_query_tokens` groups (raster order), then `mlp2x_gelu` per token. Cheaper, and
  the same number of visual tokens as the Q-Former so prompts have the same length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.model_config import ModelConfig


def mlp2x_gelu(in_dim: int, out_dim: int) -> nn.Sequential:
    """LLaVA's `mlp2x_gelu` projector: Linear -> GELU -> Linear."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


class QFormerConnector(nn.Module):
    def __init__(self, vision_width: int, llm_hidden: int, config: ModelConfig):
        super().__init__()
        from transformers import Blip2QFormerConfig, Blip2QFormerModel

        qcfg = Blip2QFormerConfig(
            hidden_size=config.qformer_hidden,
            num_hidden_layers=config.qformer_layers,
            num_attention_heads=config.qformer_heads,
            intermediate_size=4 * config.qformer_hidden,
            encoder_hidden_size=vision_width,
            cross_attention_frequency=config.qformer_cross_attention_frequency,
            hidden_dropout_prob=config.qformer_dropout,
            attention_probs_dropout_prob=config.qformer_dropout,
        )
        self.qformer = Blip2QFormerModel(qcfg)
        # BLIP-2 initialises the learned queries from N(0, 0.02).
        self.query_tokens = nn.Parameter(
            torch.randn(1, config.num_query_tokens, config.qformer_hidden) * 0.02
        )
        self.proj = mlp2x_gelu(config.qformer_hidden, llm_hidden)

    def forward(self, cls: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        image = torch.cat([cls[:, None], tokens], dim=1)  # (B, 1 + T, Dv)
        queries = self.query_tokens.expand(image.shape[0], -1, -1)  # (B, Q, Hq)
        out = self.qformer(query_embeds=queries, encoder_hidden_states=image).last_hidden_state  # (B, Q, Hq)
        return self.proj(out)  # (B, Q, llm_hidden)


class MLPConnector(nn.Module):
    def __init__(self, vision_width: int, llm_hidden: int, config: ModelConfig):
        super().__init__()
        self.num_tokens = config.num_query_tokens
        self.proj = mlp2x_gelu(vision_width, llm_hidden)

    def forward(self, cls: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        # (B, T, Dv) -> (B, Dv, T) -> pooled (B, Dv, Q) -> (B, Q, Dv)
        pooled = F.adaptive_avg_pool1d(tokens.transpose(1, 2), self.num_tokens).transpose(1, 2)
        return self.proj(pooled)  # (B, Q, llm_hidden)


def build_connector(vision_width: int, llm_hidden: int, config: ModelConfig) -> nn.Module:
    """The connector named by `config.connector` (validated by `ModelConfig`)."""
    cls = {"qformer": QFormerConnector, "mlp": MLPConnector}[config.connector]
    return cls(vision_width, llm_hidden, config)
