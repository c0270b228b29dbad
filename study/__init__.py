"""The comparison study: fits, references, outputs, report (``python -m study.compare``)."""

import warnings

# Pyro's JitTrace_ELBO and the NUTS reference's potential trace with torch.jit, which torch 2.14
# deprecates in favour of torch.compile (which Pyro's inference does not use). The
# warning repeats once per traced fit and says nothing about the results; everything
# else still warns.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.(trace|script)` is deprecated", category=FutureWarning)


def __getattr__(name: str):
    """``study.diagnose``, imported on first use: ``python -m study.compare`` never loads it."""
    if name == "diagnose":
        import importlib

        return importlib.import_module("study.diagnose")
    raise AttributeError(f"module 'study' has no attribute {name!r}")
