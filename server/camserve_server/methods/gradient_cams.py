"""Gradient-weighted CAMs: each differs only in how it weighs channels (``g = dy_c/dA``)."""

from __future__ import annotations

import torch

from .cam_base import CamMethod


class GradCam(CamMethod):
    """Grad-CAM (Selvaraju et al. 2017): ``w_k = mean_ij g_kij``."""

    id = "gradcam"
    description = "Channel weights are the spatially averaged gradients of the target logit."
    reference = "Selvaraju et al. 2017; pytorch-grad-cam GradCAM"

    def channel_weights(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients.mean(dim=(2, 3))


class GradCamPlusPlus(CamMethod):
    """Grad-CAM++ (Chattopadhay et al. 2018).

    ``a = g^2 / (2 g^2 + sum_ab(A_kab) g^3 + 1e-6)`` (0 where ``g = 0``);
    ``w_k = sum_ij relu(g) a``.
    """

    id = "gradcam++"
    description = "Grad-CAM with pixel-wise weights from second- and third-order gradient terms."
    reference = "Chattopadhay et al. 2018; pytorch-grad-cam GradCAMPlusPlus"

    def channel_weights(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        # 2 g^2 + S g^3 = g^2 (2 + S g); where g = 0, alpha = 0 / 1e-6 = 0 exactly.
        g2 = gradients.square()
        sum_activation = activation.sum(dim=(2, 3), keepdim=True)
        alpha = g2 / (g2 * (sum_activation * gradients + 2) + 1e-6)
        return (torch.relu(gradients) * alpha).sum(dim=(2, 3))


class XGradCam(CamMethod):
    """XGrad-CAM (Fu et al. 2020): ``w_k = sum_ij g A / (sum_ab A_kab + 1e-7)``."""

    id = "xgradcam"
    description = "Gradients weighted by the normalised activation, an axiom-based Grad-CAM."
    reference = "Fu et al. 2020; pytorch-grad-cam XGradCAM"

    def channel_weights(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        normaliser = activation.sum(dim=(2, 3), keepdim=True) + 1e-7
        return (gradients * activation / normaliser).sum(dim=(2, 3))


class HiResCam(CamMethod):
    """HiResCAM (Draelos & Carin 2020): ``cam = sum_k g_k * A_k`` elementwise."""

    id = "hirescam"
    description = "Element-wise gradient times activation, summed over channels."
    reference = "Draelos & Carin 2020; pytorch-grad-cam HiResCAM"

    def cam(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return (gradients * activation).sum(dim=1)


class LayerCam(CamMethod):
    """LayerCAM (Jiang et al. 2021): ``cam = sum_k relu(g_k) * A_k``."""

    id = "layercam"
    description = "Positive gradients times activation, summed over channels."
    reference = "Jiang et al. 2021; pytorch-grad-cam LayerCAM"

    def cam(self, activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return (torch.relu(gradients) * activation).sum(dim=1)
