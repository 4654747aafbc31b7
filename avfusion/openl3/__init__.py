"""The OpenL3 audio network ported to PyTorch: front end, network, official Keras weights, resampling."""
