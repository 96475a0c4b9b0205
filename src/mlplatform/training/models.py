"""The demo models: a scikit-learn random forest and a torch MLP, both taking the raw model features."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from sklearn.ensemble import RandomForestClassifier
from torch import nn


def train_forest(
    x: pd.DataFrame, y: np.ndarray, *, n_estimators: int, max_depth: int, seed: int, n_jobs: int
) -> RandomForestClassifier:
    """Fit a random forest (a bare estimator, so skl2onnx converts it for the serving fast path)."""
    model = RandomForestClassifier(
        n_estimators=n_estimators,
        max_depth=max_depth,
        min_samples_leaf=5,
        random_state=seed,
        n_jobs=n_jobs,
    )
    model.fit(x, y)
    return model


class FraudMLP(nn.Module):
    """MLP over the raw feature columns; standardisation is inside, the output is P(fraud), shape (N, 1)."""

    def __init__(self, n_features: int, mean: np.ndarray, std: np.ndarray, hidden: int = 64) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(np.where(std > 0, std, 1.0), dtype=torch.float32))
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden // 2),
            nn.ReLU(),
            nn.Linear(hidden // 2, 1),
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Un-squashed scores for raw feature rows."""
        z = (x.to(torch.float32) - self.mean) / self.std
        return self.net(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fraud probability for each raw feature row."""
        return torch.sigmoid(self.logits(x))


def train_mlp(
    x: pd.DataFrame,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
) -> FraudMLP:
    """Train the MLP with BCE (unweighted, so the output stays a calibrated probability); seeded."""
    torch.manual_seed(seed)
    xs = x.to_numpy(np.float32)
    model = FraudMLP(xs.shape[1], xs.mean(axis=0), xs.std(axis=0))
    xt = torch.from_numpy(xs)
    yt = torch.from_numpy(np.asarray(y, dtype=np.float32)).reshape(-1, 1)
    loss_fn = nn.BCEWithLogitsLoss()
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for start in range(0, len(xt), batch_size):
            idx = perm[start : start + batch_size]
            opt.zero_grad()
            loss = loss_fn(model.logits(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if on_epoch is not None:
            on_epoch(epoch, total / len(xt))
    model.eval()
    return model


def mlp_predict(model: FraudMLP, x: pd.DataFrame) -> np.ndarray:
    """Fraud probabilities as a 1-D float64 array."""
    with torch.no_grad():
        return model(torch.from_numpy(x.to_numpy(np.float32))).numpy().reshape(-1).astype(np.float64)
