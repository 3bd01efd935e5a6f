"""Unit tests run single-threaded: their models are tiny (threads only add overhead there)
and single-threaded float results are reproducible run to run."""
import torch

torch.set_num_threads(1)
