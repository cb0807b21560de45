"""Making a step cheaper on the GPU without changing what it computes.

* `compile_blocks(model)`: regional compilation -- every DwGNBlock compiled with `fullgraph=True` (the network
  repeats one block, so a handful of graphs, one per channel width and shift, serve all 36 of `paper`).
* `CudaGraphStep`: one fixed-shape training step (forward, L1 loss, backward, capturable Adam) captured as a
  CUDA graph and replayed: no host sync inside, the loss is read outside. CUDA only.

Neither is on by default (config keys `compile`, `cuda_graphs`; `--compile` for test.py) until a GPU measurement
(benchmarks/gpu_check.py) shows it is faster.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dwgn.models.network import DwGNBlock
from dwgn.training.config import ConfigError

# blocks differ in width (4 levels) and shift (0/4), training and eval: more graphs than dynamo's default limit
RECOMPILE_LIMIT = 64


def compile_blocks(model: nn.Module, mode: str | None = None, backend: str = "inductor") -> nn.Module:
    """Compile every DwGNBlock of `model` in place (fullgraph: a graph break is an error); returns `model`."""
    blocks = [m for m in model.modules() if isinstance(m, DwGNBlock)]
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no DwGNBlock to compile")
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    for block in blocks:
        block.compile(fullgraph=True, dynamic=False, mode=mode, backend=backend)
    return model


def has_compiled_modules(model: nn.Module) -> bool:
    """Whether `compile_blocks` (or any nn.Module.compile) was applied inside `model`."""
    return any(getattr(m, "_compiled_call_impl", None) is not None for m in model.modules())


def l1_step_loss(model: nn.Module, inputs: Tensor, targets: Tensor, amp_dtype: torch.dtype | None) -> Tensor:
    """The training loss, L1 in float32; the forward under autocast on the inputs' device when amp_dtype is given."""
    with torch.autocast(inputs.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        restored = model(inputs)
    return F.l1_loss(restored.float(), targets.float())


def capturable_adam(model: nn.Module, lr: float, betas: tuple, weight_decay: float) -> torch.optim.Adam:
    """Adam whose step runs inside a CUDA graph: step counts and the learning rate live on the GPU."""
    device = next(model.parameters()).device
    if device.type != "cuda":
        raise ConfigError(f"cuda_graphs needs a CUDA device (this run is on {device}); set cuda_graphs: false")
    return torch.optim.Adam(model.parameters(), lr=torch.tensor(lr, device=device), betas=tuple(betas),
                            weight_decay=weight_decay, capturable=True)


class CudaGraphStep:
    """A whole training step on fixed-shape batches, captured once and replayed.

    step = CudaGraphStep(model, optimizer, x, y); loss = step(x, y)  # a GPU tensor; .item() outside
    The warm-up passes that CUDA graphs need (on a side stream) are undone: weights and optimizer state are put
    back in place, so the first replayed step is the run's first step. The learning rate is a GPU tensor: fill_ each group's "lr".
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, inputs: Tensor, targets: Tensor,
                 amp_dtype: torch.dtype | None = None, warmup: int = 3,
                 loss_fn: Callable[..., Tensor] = l1_step_loss) -> None:
        if inputs.device.type != "cuda":
            raise ValueError("cuda_graphs needs a CUDA device; set cuda_graphs: false on the CPU")
        if not all(g.get("capturable") for g in optimizer.param_groups):
            raise ValueError("cuda_graphs needs a capturable optimizer (capturable_adam)")
        self.optimizer = optimizer
        self.inputs, self.targets = inputs.clone(), targets.clone()
        params = [p for p in model.parameters()]
        saved = [p.detach().clone() for p in params]
        # optimizer state before the warm-up (a resumed run has some; a fresh Adam starts from zeros)
        before = {(id(p), k): t.detach().clone() for p, s in optimizer.state.items() for k, t in s.items()
                  if torch.is_tensor(t)}

        def run() -> Tensor:
            loss = loss_fn(model, self.inputs, self.targets, amp_dtype)
            loss.backward()
            optimizer.step()
            return loss.detach()

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                optimizer.zero_grad(set_to_none=False)
                run()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=False)
        with torch.cuda.graph(self.graph):
            optimizer.zero_grad(set_to_none=False)
            self.loss = run()
        with torch.no_grad():  # undo the warm-up: the same tensors (the graph's addresses), their starting values
            for p, v in zip(params, saved):
                p.copy_(v)
            for p, s in optimizer.state.items():
                for k, t in s.items():
                    if torch.is_tensor(t):
                        t.copy_(before[(id(p), k)]) if (id(p), k) in before else t.zero_()

    def __call__(self, inputs: Tensor, targets: Tensor) -> Tensor:
        self.inputs.copy_(inputs, non_blocking=True)
        self.targets.copy_(targets, non_blocking=True)
        self.graph.replay()
        return self.loss
