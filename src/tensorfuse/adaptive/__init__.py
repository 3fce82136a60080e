"""Adaptive sampling: a committee's ensemble, the frames it disagrees on labelled, the data grown,
until the dynamics settle (the ``tensorfuse adaptive`` command).

* :func:`run_adaptive` and :class:`AdaptiveConfig` (one YAML file; sections
  :class:`DynamicsOptions`, :class:`SelectionOptions`, :class:`LabellerOptions`, :class:`StopOptions`);
* labellers (:class:`Labeller`): :class:`ModelLabeller`, :class:`CasscfLabeller`,
  :class:`CommandLabeller`, :func:`callable_labeller`.
"""

from tensorfuse.adaptive._config import (
    AdaptiveConfig,
    DynamicsOptions,
    LabellerOptions,
    SelectionOptions,
    StopOptions,
)
from tensorfuse.adaptive._labellers import (
    CasscfLabeller,
    CommandLabeller,
    Labeller,
    ModelLabeller,
    callable_labeller,
)
from tensorfuse.adaptive._loop import AdaptiveResult, make_labeller, run_adaptive, select_frames

__all__ = [
    "AdaptiveConfig",
    "AdaptiveResult",
    "CasscfLabeller",
    "CommandLabeller",
    "DynamicsOptions",
    "Labeller",
    "LabellerOptions",
    "ModelLabeller",
    "SelectionOptions",
    "StopOptions",
    "callable_labeller",
    "make_labeller",
    "run_adaptive",
    "select_frames",
]
