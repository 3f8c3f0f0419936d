"""Suite-wide settings: nothing reaches the network, plots render off-screen, one thread per
process (the tiny tensors here run faster without intra-op threads, and subprocess tests
do not oversubscribe the cores)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

torch.set_num_threads(1)
