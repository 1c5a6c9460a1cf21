"""ADRec (KDD 2025) re-implementation: data, models, one trainer, evaluation, checkpoints."""
__version__ = "0.1.0"
