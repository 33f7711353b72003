"""The one place bayesirl builds a Gymnasium environment from its id.

Box2D's SWIG bindings (LunarLander, BipedalWalker, CarRacing) emit DeprecationWarnings while
their extension module loads; under warnings-as-errors (``python -W error``, pytest's
``filterwarnings = error``) the warning is raised inside that load and the interpreter
crashes with a segmentation fault. :func:`box2d_safe` silences DeprecationWarnings for a
block only; :func:`make_env` runs ``gymnasium.make`` inside it, so every reader of an
environment id (rollouts, evaluation, tabular MDPs from Gymnasium) loads Box2D safely, and an
import of Box2D's modules (the LunarLander expert's heuristic) goes inside it too.
"""

from __future__ import annotations

import contextlib
import warnings

__all__ = ["as_env", "box2d_safe", "make_env"]


@contextlib.contextmanager
def box2d_safe():
    """A block in which Box2D's extension modules can load under warnings-as-errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def make_env(env_id: str, **kwargs):
    """``gymnasium.make(env_id, **kwargs)``, with Box2D's import-time warnings silenced (see
    the module doc); an ImportError that names the extra when Gymnasium is missing."""
    try:
        import gymnasium
    except ImportError as e:
        raise ImportError("gymnasium is needed for Gymnasium environments: "
                          "pip install bayesirl[gym]") from e
    with box2d_safe():
        return gymnasium.make(env_id, **kwargs)


def as_env(env):
    """``env`` itself, or the environment :func:`make_env` builds when it is an id (a str):
    the one rule for arguments that take either."""
    return make_env(env) if isinstance(env, str) else env
