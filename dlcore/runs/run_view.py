"""A trained run, ready to look inside: the model on the CPU, its test predictions, its history.

Built either from a fresh `TrainResult` or from a run kept in the store (weights reloaded and the
test set predicted again), so the inspection pages draw both the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from dlcore.engine.config import RunConfig
from dlcore.engine.dataset import Dataset
from dlcore.engine.models import build_model, count_params, first_weight_layer
from dlcore.engine.train import TrainResult, evaluate, input_normaliser
from dlcore.runs.store import RunStore


@dataclass
class RunView:
    run_id: int | None
    config: RunConfig
    dataset: Dataset
    model: nn.Sequential
    test_pred: np.ndarray
    test_prob: np.ndarray
    history: list[dict] = field(default_factory=list)
    first_layer: list[np.ndarray] = field(default_factory=list)  # per epoch, 0 = before training
    status: str = "finished"
    message: str = ""

    @property
    def params(self) -> int:
        return count_params(self.model)

    @property
    def test_acc(self) -> float:
        return float((self.test_pred == self.dataset.test_y.numpy()).mean())

    def model_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (N, C, H, W) as the network sees them (normalised or not, per the config)."""
        scale, shift = input_normaliser(self.dataset, self.config.train.normalize)
        return images.float() * scale - shift


def _model(config: RunConfig, dataset: Dataset, state_dict: dict) -> nn.Sequential:
    model = build_model(config.model, dataset.shape, dataset.num_classes)
    model.load_state_dict(state_dict)
    return model.eval()


def view_from_result(result: TrainResult, dataset: Dataset, run_id: int | None = None) -> RunView:
    return RunView(
        run_id=run_id, config=result.config, dataset=dataset,
        model=_model(result.config, dataset, result.state_dict),
        test_pred=result.test_pred, test_prob=result.test_prob,
        history=[m.as_dict() for m in result.history], first_layer=list(result.first_layer),
        status=result.status, message=result.message,
    )


def view_from_store(store: RunStore, run_id: int, dataset: Dataset) -> RunView:
    """Reload a kept run; its test predictions are computed again from the saved weights."""
    run = store.get_run(run_id)
    config = RunConfig.from_dict(run["config"])
    model = _model(config, dataset, store.load_weights(run_id))
    scale, shift = input_normaliser(dataset, config.train.normalize)
    _, _, probs = evaluate(model, dataset.test_x, dataset.test_y, scale, shift, with_probs=True)
    probs_np = probs.numpy()
    layer = first_weight_layer(model)
    first = [layer.weight.detach().numpy().astype(np.float16)] if layer is not None else []
    history = store.epochs(run_id).to_dict("records")
    return RunView(run_id=run_id, config=config, dataset=dataset, model=model,
                   test_pred=probs_np.argmax(1), test_prob=probs_np, history=history,
                   first_layer=first, status=run["status"], message=run.get("message") or "")
