"""weyl: train Transformers without learning-rate warmup (AdamW², spectral diagnostics, recipes)."""

__version__ = "0.1.0"
