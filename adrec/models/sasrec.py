"""SASRec+ : causal transformer, learned positions, full-softmax CE at every position.

Official-implementation.md sections 3.1 and 4.1. Input path LN(eps 1e-5) -> Dropout(0.3) ->
2 post-norm causal blocks; every Linear and Embedding weight starts N(0, 0.1) (the authors'
``self.apply`` init, which also overwrites the padding row); the score of item i is
``h_last . E[i]``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adrec.data import Batch
from adrec.models.base import Recommender
from adrec.models.layers import Dropout, Encoder, Packing


@dataclass
class SASRecArgs:
    hidden: int = 128            # embedding and model width D
    n_blocks: int = 2            # transformer blocks
    n_heads: int = 4             # attention heads (head size D / n_heads)
    dropout: float = 0.1         # attention-probability, residual and FFN dropout
    emb_dropout: float = 0.3     # dropout on the normalised input embeddings
    max_len: int = 50            # history window; also the size of the position table
    init_std: float = 0.1        # N(0, init_std) init of every Linear/Embedding weight (authors')
    attention_mask: str = "correct"  # "correct" masks padding keys; "official" = authors' bug
    positions: bool = True       # learned absolute positions (SASRec+); False = ADRec stage 1


class SASRec(Recommender):
    name = "sasrec"
    Args = SASRecArgs
    # auto = bfloat16 products on a bfloat16 CPU: SASRec+ on Beauty 4.15 s an epoch against
    # 4.78 s at float32; ADRec's stage 1 (this class) has the 3-seed accuracy evidence
    # (benchmarks/bench_matmul_precision.md, bench_diffurec_epoch.md)
    cpu_bf16 = True

    def __init__(self, args: SASRecArgs, n_items: int):
        super().__init__(args, n_items)
        D = args.hidden
        self.item_embedding = nn.Embedding(n_items + 1, D)
        self.position_embedding = nn.Embedding(args.max_len, D) if args.positions else None
        self.input_norm = nn.LayerNorm(D, eps=1e-5)
        self.input_dropout = Dropout(args.emb_dropout)
        self.encoder = Encoder(D, args.n_blocks, args.n_heads, args.dropout, causal=True,
                               attention_mask=args.attention_mask)
        for m in self.modules():  # authors' init: overrides Xavier and the zero padding row
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=args.init_std)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def encode(self, history: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """history (B, L) -> hidden states (B, L, D). ``offset``: trimmed left-padding columns."""
        x = self.item_embedding(history)  # (B, L, D)
        if self.position_embedding is not None:
            L = history.shape[1]
            pos = torch.arange(offset, offset + L, device=history.device)
            if offset + L > self.args.max_len:
                raise ValueError(f"history width {offset + L} exceeds max_len {self.args.max_len}")
            x = x + self.position_embedding(pos)[None]
        x = self.input_dropout(self.input_norm(x))
        return self.encoder(x, history > 0)

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        h = self.encode(batch.history, batch.offset)  # (B, L, D)
        keep = batch.target > 0                        # (B, L)
        # (M, N+1): row 0 is a never-label class
        logits = F.linear(Packing(keep).pack(h), self.item_embedding.weight)
        ce = F.cross_entropy(logits, batch.target[keep], reduction="sum") / batch.n_tokens
        return {"loss": ce, "ce": ce}

    def represent(self, history: torch.Tensor, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
        """The last position's hidden state, (B, L) -> (B, D)."""
        offset = self.args.max_len - history.shape[1]
        return self.encode(history, offset)[:, -1]


_OFFICIAL_KEYS = [
    (r"^LayerNorm\.", "input_norm."),
    (r"^trm_encoder\.transformer_blocks\.(\d+)\.attention\.linear_layers\.0\.", r"encoder.blocks.\1.attn.q."),
    (r"^trm_encoder\.transformer_blocks\.(\d+)\.attention\.linear_layers\.1\.", r"encoder.blocks.\1.attn.k."),
    (r"^trm_encoder\.transformer_blocks\.(\d+)\.attention\.linear_layers\.2\.", r"encoder.blocks.\1.attn.v."),
    (r"^trm_encoder\.transformer_blocks\.(\d+)\.attention\.w_layer\.", r"encoder.blocks.\1.attn.out."),
    (r"^trm_encoder\.transformer_blocks\.(\d+)\.feed_forward\.w_1\.", r"encoder.blocks.\1.ffn.w1."),
    (r"^trm_encoder\.transformer_blocks\.(\d+)\.feed_forward\.w_2\.", r"encoder.blocks.\1.ffn.w2."),
    (r"^trm_encoder\.transformer_blocks\.(\d+)\.input_sublayer\.norm\.", r"encoder.blocks.\1.norm1."),
    (r"^trm_encoder\.transformer_blocks\.(\d+)\.output_sublayer\.norm\.", r"encoder.blocks.\1.norm2."),
]


def is_official_state_dict(sd: dict) -> bool:
    return "item_embedding.weight" in sd and any(k.startswith("trm_encoder.") for k in sd)


def convert_official_state_dict(sd: dict, *, positions: bool) -> dict:
    """Rename the authors' SASRec/pretrain keys (section 3.3) to this implementation's."""
    out = {}
    for key, value in sd.items():
        if key == "position_embedding.weight" and not positions:
            continue  # the authors' pretrain model never adds positions (section 3.1)
        new = key
        for pattern, repl in _OFFICIAL_KEYS:
            new = re.sub(pattern, repl, new)
        out[new] = value
    return out
