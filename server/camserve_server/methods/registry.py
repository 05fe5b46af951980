"""The one registry of methods. Adding a method: one small file, one line below."""

from __future__ import annotations

from ..registry import Registry
from .ablationcam import AblationCam
from .activations import ChannelProfile, Embedding, FeatureMaps, Filters
from .base import Method
from .class_activation_map import ClassActivationMap
from .eigencam import EigenCam
from .gradient_cams import GradCam, GradCamPlusPlus, HiResCam, LayerCam, XGradCam
from .guided import Deconvnet, GuidedBackprop, GuidedGradCam
from .integrated_gradients import IntegratedGradients
from .occlusion import Occlusion
from .saliency import InputXGradient, Saliency
from .scorecam import ScoreCam
from .smoothgrad import SmoothGrad

METHODS: Registry[Method] = Registry(
    "method",
    (
        ClassActivationMap(),
        GradCam(),
        GradCamPlusPlus(),
        XGradCam(),
        HiResCam(),
        LayerCam(),
        ScoreCam(),
        AblationCam(),
        EigenCam(),
        Saliency(),
        InputXGradient(),
        IntegratedGradients(),
        SmoothGrad(),
        GuidedBackprop(),
        Deconvnet(),
        GuidedGradCam(),
        Occlusion(),
        FeatureMaps(),
        ChannelProfile(),
        Filters(),
        Embedding(),
    ),
)


def get_method(method_id: str) -> Method:
    """The registered method ``method_id``, or ``InvalidArgument`` naming the valid ones."""
    return METHODS.lookup(method_id)
