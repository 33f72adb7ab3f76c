"""One LightningModule for every variant and task: the network comes in as an argument, the
task entry supplies loss and metrics, and Lightning computes, logs and resets the metrics."""

from __future__ import annotations

from typing import Any, Mapping

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MinMetric
from typing_extensions import override

from modules.encoders import InputEmbedding
from modules.network import count_parameters
from modules.tasks import Task

class SequenceModule(pl.LightningModule):
    """Trains ``net`` (any module mapping ``(x, lengths, y)`` to the task's output) on ``task``.

    Logs ``<stage>/loss`` and ``<stage>/<metric>`` for every metric of the task, and
    ``val/<monitor>_best``, the best validation value so far."""

    def __init__(self, net: nn.Module, task: Task, data: Mapping[str, Any], lr: float = 1e-3,
                 weight_decay: float = 0.0):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "task"])
        self.net = net
        self.task = task
        self.data = dict(data)
        metrics = task.metrics(self.data)
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.best = MaxMetric() if task.mode == "max" else MinMetric()
        self.n_params = count_parameters(self)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, lengths, y)

    def input_gradient_norms(self, x: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """How much each input step still moves the loss: (T,), at step t the mean over the
        batch's sequences that reach t of ||dL/de_t||, e_t the embedded step (the output of the
        network's first ``InputEmbedding``: a token's embedding, a projected frame, or the raw
        frame where nothing projects it, as for the RNNs and the convolutional front ends).
        L is the task's loss on the batch times the batch size, so each sequence's gradient is
        that of its own loss (every task's loss is a mean over the batch). Computed in eval
        mode (no dropout); the module's mode and parameters' gradients are left as they were."""
        x, lengths, y = x.to(self.device), lengths.to(self.device), y.to(self.device)
        embed = next((m for m in self.net.modules() if isinstance(m, InputEmbedding)), None)
        captured: list[torch.Tensor] = []

        def capture(module, inputs, output):
            leaf = output.detach().requires_grad_()  # the gradient is wanted here, not beyond
            captured.append(leaf)
            return leaf

        if embed is None:  # a custom network without one: its raw input, when that is numeric
            if not x.is_floating_point():
                raise ValueError("input gradients need float inputs or an InputEmbedding in the network")
            x = x.detach().requires_grad_()
            captured.append(x)
        handle = embed.register_forward_hook(capture) if embed is not None else None
        training = self.training
        self.eval()
        try:
            # cuDNN's RNN backward runs in training mode only; the native kernels run in either
            with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
                loss = self.task.loss(self(x, lengths), y) * x.size(0)
                (grad,) = torch.autograd.grad(loss, captured[0])
        finally:
            if handle is not None:
                handle.remove()
            self.train(training)
        norms = grad.detach().flatten(2).norm(dim=-1) if grad.dim() > 2 else grad.detach().abs()
        valid = (torch.arange(norms.size(1), device=norms.device)[None, :]
                 < lengths.to(norms.device)[:, None])
        counts = valid.sum(dim=0)
        return ((norms * valid).sum(dim=0) / counts.clamp(min=1)).masked_fill(counts == 0, float("nan")).cpu()

    @override
    def on_train_start(self) -> None:
        self.best.reset()  # a resumed or re-fit trainer starts its best-so-far afresh

    def _shared_step(self, batch, stage: str) -> torch.Tensor:
        x, lengths, y = batch
        out = self(x, lengths, y if stage == "train" else None)
        loss = self.task.loss(out, y)
        args, kwargs = self.task.metric_inputs(out, batch, self.data)
        getattr(self, f"{stage}_metrics").update(*args, **kwargs)
        getattr(self, f"{stage}_loss").update(loss.detach())
        return loss

    def _log_epoch(self, stage: str) -> None:
        # the metric objects themselves go to Lightning (which computes, syncs and resets
        # them), once per epoch: logging them at every step cost ~0.75 ms a call, a third of
        # a small LSTM's step (benchmarks/step_overhead.py)
        self.log(f"{stage}/loss", getattr(self, f"{stage}_loss"), sync_dist=True)
        self.log_dict(getattr(self, f"{stage}_metrics"), sync_dist=True)

    @override
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    @override
    def validation_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    @override
    def test_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    @override
    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    @override
    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.best.update(self.val_metrics[self.task.monitor].compute())
        self._log_epoch("val")
        self.log(f"val/{self.task.monitor}_best", self.best.compute(), sync_dist=True)

    @override
    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    @override
    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr,
                                 weight_decay=self.hparams.weight_decay)
