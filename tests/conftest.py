import torch

# One intra-op thread: the tests' tensors are small, and on a shared 2-core machine OpenMP threads that
# wait for each other made the suite tens of times slower. Results do not depend on it.
torch.set_num_threads(1)
