"""The stability atlas (``weyl atlas``): every warmup-free stabilizer over one grid of peak LRs.

- :mod:`weyl.atlas.methods`: the methods, name → overrides (the one place they are defined);
- :mod:`weyl.atlas.grid`: methods × LRs × widths × seeds and each run's overrides;
- :mod:`weyl.atlas.scheduler`: how the runs are started (a local pool, or Hydra multirun);
- :mod:`weyl.atlas.results`: what each run measured, its failure mode, per-method summaries;
- :mod:`weyl.atlas.outputs`: ``atlas.json``, ``atlas.md``, the figures and wandb;
- :mod:`weyl.atlas.run_atlas`: the default grids and the whole sequence.
"""
