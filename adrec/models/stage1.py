"""ADRec stage 1: embedding pre-training = SASRec+ without positional encoding (paper 3.4).

Can import the authors' shipped ``pretrain.pth`` (a plain state dict, section 3.3).
"""
from __future__ import annotations

from dataclasses import dataclass

from adrec.models.sasrec import SASRec, SASRecArgs


@dataclass
class Stage1Args(SASRecArgs):
    positions: bool = False  # the stage-1 model adds no positional encoding


class Stage1(SASRec):
    name = "stage1"
    Args = Stage1Args
