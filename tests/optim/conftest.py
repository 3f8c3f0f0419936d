"""Optimizer tests run single-threaded: on the shared 2-core machine two intra-op threads
made a tiny model's step ~40× slower (measured) through oversubscription."""

import torch

torch.set_num_threads(1)
