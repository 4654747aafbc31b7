"""The extractor registry: one module per extractor under avfusion/extractors/, named after it.

`names()` lists the modules of that folder without importing any (so listing the extractors, or
checking a name in params.yaml, loads no model code); `get(name)` imports `avfusion.extractors.<name>`,
whose class registered itself with `@register` (avfusion/extraction/base.py). A stage imports only
the module of its own extractor: dvc.yaml's deps stay exact.
"""
from __future__ import annotations

import functools
import importlib
import os
import pkgutil

EXTRACTORS_PACKAGE = "avfusion.extractors"
REGISTERED: dict[str, type] = {}     # filled by base.register as modules are imported


class UnknownExtractor(KeyError):
    pass


@functools.cache
def names() -> tuple[str, ...]:
    """Every registered extractor's name: the modules of avfusion/extractors/, in alphabetical order."""
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "extractors")
    return tuple(sorted(m.name for m in pkgutil.iter_modules([folder]) if not m.name.startswith("_")))


def get(name: str):
    """The extractor class called `name`. Raises a UserError naming the known ones."""
    from avfusion.errors import UserError
    if name not in names():
        raise UserError(f"unknown extractor {name!r} (known: {', '.join(names())})")
    if name not in REGISTERED:
        importlib.import_module(f"{EXTRACTORS_PACKAGE}.{name}")
    if name not in REGISTERED:
        raise RuntimeError(f"avfusion/extractors/{name}.py registers no extractor named {name!r} (@register)")
    return REGISTERED[name]
