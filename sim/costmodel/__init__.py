"""Cost models: predict per-iteration batch time (see base.CostModel)."""
from goodput.sim.costmodel.base import Batch, CostModel

__all__ = ["Batch", "CostModel"]
