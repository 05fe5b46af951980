"""Evaluations of explanation methods on a model: which method's maps can be trusted?

Over many images, each method's maps are scored for faithfulness (``faithfulness``'s
scores), for localisation (the pointing game, Zhang et al. 2016) when boxes are given,
and for their dependence on the learned parameters (the cascading model-randomisation
sanity check, Adebayo et al. 2018). ``plan`` checks a query once; ``units`` is the work
the device workers run; ``service`` runs an evaluation as a job (streamed progress,
cancellable, behind explanations); ``servicer`` is its RPC surface.
"""

from .events import EvaluationEvent, EvaluationProgress, EvaluationReport
from .query import EvaluationQuery
from .service import EvaluationService

__all__ = [
    "EvaluationEvent",
    "EvaluationProgress",
    "EvaluationQuery",
    "EvaluationReport",
    "EvaluationService",
]
