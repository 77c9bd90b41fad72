"""Fused ops for Tri-Ergon. Each op module holds its pure-PyTorch reference (the CPU path and test oracle).

Nothing here imports Triton at package import time.
"""

if __name__ == "kernels":
    # This folder was imported under its own name: the repository root is on sys.path, as `python -m ...` or
    # `python script.py` run from it puts it. `kernels` is also a PyPI package (the Hugging Face kernel hub) that
    # transformers imports when it is installed; then that package takes the name, so that transformers works
    # from the repository root too. Tri-Ergon itself imports this folder as `triergon.kernels` only.
    import importlib.machinery
    import importlib.util
    import os
    import sys

    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _spec = importlib.machinery.PathFinder.find_spec(
        "kernels", [p for p in sys.path if os.path.abspath(p or os.curdir) != _root])
    if _spec is not None:
        _module = importlib.util.module_from_spec(_spec)
        sys.modules["kernels"] = _module  # the import statement returns what sys.modules holds at its end
        _spec.loader.exec_module(_module)
