"""avfusion: per-frame valence and arousal from face and voice, on cached features (see docs/design.md)."""
