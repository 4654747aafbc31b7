"""DVC entry points, one module per stage of dvc.yaml (`python -m stages.<name>`).

Each reads its own params section, calls the `avfusion` library and writes the stage's outputs.
No stage module imports another.
"""
