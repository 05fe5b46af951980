"""The tolerances of reduced-precision explanations against float32, stated once.

Measured under bfloat16 autocast on the CPU (the demo model on demo images, a
seeded random-weight ResNet-18 at 64x64) with about 2.5x margin; docs/methods.md,
"Precision", gives the figures. The GPU tests hold float16 and bfloat16 on CUDA
to the same lines (float16 keeps more mantissa bits than bfloat16).
"""

from __future__ import annotations

OPTIONS: dict[str, dict[str, object]] = {
    "integrated_gradients": {"steps": 8},
    "smoothgrad": {"samples": 4},
    "occlusion": {"window": 16, "stride": 8},
}

# Max |heatmap_bf16 - heatmap_fp32| on [0, 1] maps; measured maxima (demo, resnet18) in the
# comments. The CAM family's maps come from bfloat16 activations and gradients.
HEATMAP_TOLERANCE = {
    "cam": 0.05,  # 0.012, 0.018
    "gradcam": 0.05,  # 0.012, 0.018
    "gradcam++": 0.05,  # 0.009, 0.006
    "xgradcam": 0.05,  # 0.012, 0.018
    "hirescam": 0.05,  # 0.012, 0.017
    "layercam": 0.05,  # 0.008, 0.006
    "scorecam": 0.05,  # 0.014, 0.021
    "eigencam": 0.05,  # 0.006, 0.007
}
# Activation methods: max |raw_bf16 - raw_fp32| relative to max |raw_fp32| (per-channel
# min-max heatmaps of near-constant channels amplify rounding, so the values are compared).
RAW_RELATIVE_TOLERANCE = {
    "feature_maps": 0.02,  # 0.0064, 0.0070
    "channel_profile": 0.02,  # 0.0041, 0.0065
    "embedding": 0.02,  # 0.0045, 0.0072
    "filters": 0.0,  # the weights themselves
}
FLOAT32_METHODS = {
    "ablationcam",
    "saliency",
    "input_x_gradient",
    "integrated_gradients",
    "smoothgrad",
    "guided_backprop",
    "deconvnet",
    "guided_gradcam",
    "occlusion",
}

# On CUDA: float16 holds the lines above. bfloat16 rounds every convolution's output to
# 8 significant bits (CPU autocast keeps more in float32), so its maps move further: the
# largest differences measured on an H200 (seeded ResNet-18, 64x64) in the comments, the
# lines about 1.6x above them. float16 is the reduced precision to use on a GPU.
CUDA_BFLOAT16_HEATMAP_TOLERANCE = {
    "cam": 0.1,  # 0.059
    "gradcam": 0.1,  # 0.059
    "gradcam++": 0.25,  # 0.157, 0.167
    "xgradcam": 0.1,  # 0.059
    "hirescam": 0.1,  # 0.059
    "layercam": 0.16,  # 0.098
    "scorecam": 0.1,  # 0.039
    "eigencam": 0.1,  # 0
}
CUDA_BFLOAT16_RAW_RELATIVE_TOLERANCE = {
    "feature_maps": 0.07,  # 0.041, 0.043
    "channel_profile": 0.06,  # 0.032, 0.036
    "embedding": 0.06,  # 0.032, 0.036
    "filters": 0.0,  # the weights themselves
}
# Methods that switch autocast off compute in float32 either way: on an H200 with TF32 off
# they matched their float32 runs to 7.8e-7.
CUDA_FLOAT32_METHODS_TOLERANCE = 1e-5
