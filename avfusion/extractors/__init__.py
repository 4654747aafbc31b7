"""The extractors, one module each, named after the extractor (avfusion/extraction/registry.py)."""
