"""The oldest PyTorch core runs on, stated once and checked when the worker starts (an External Python brings its
own). Core names out-of-memory errors torch.cuda.OutOfMemoryError: torch.OutOfMemoryError, its alias, only exists
from 2.5 on, and naming it on an older release raises AttributeError in every except clause that mentions it."""

import re
import sys

# torch.load(mmap=True) and load_state_dict(assign=True) (core.weights) came in 2.1; releases from 2.1 to 2.12 are
# not tested here (the tests run 2.13).
MIN_TORCH = (2, 1)


def torch_problem() -> str | None:
    """Why this interpreter's PyTorch cannot run core (missing, or older than MIN_TORCH), or None when it can."""
    wanted = ".".join(map(str, MIN_TORCH))
    advice = (f"Install PyTorch {wanted} or newer there (the README's GPU section shows how), or use Blender's own "
              "Python by clearing the add-on's External Python preference.")
    try:
        import torch
    except ImportError as error:
        return f"The Python at {sys.executable} has no usable PyTorch ({error}). {advice}"
    version = getattr(torch, "__version__", "unknown")
    match = re.match(r"(\d+)\.(\d+)", str(version))
    if match is None or tuple(map(int, match.groups())) < MIN_TORCH:
        return f"The Python at {sys.executable} has PyTorch {version}; Image to Mesh needs {wanted} or newer. {advice}"
    return None
