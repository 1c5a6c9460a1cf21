"""collapse-kit: measure embedding collapse in sequential recommenders."""
__version__ = "0.1.0"
