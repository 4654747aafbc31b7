"""avfusion: audio-visual continuous emotion recognition on cached features, driven by DVC."""
