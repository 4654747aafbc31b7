"""Learning on cached features: feature sets, windows, models, losses and metrics, training, evaluation."""
