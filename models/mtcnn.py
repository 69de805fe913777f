"""MTCNN face detection (P-net over an image pyramid, R-net, O-net), batched, on facenet-pytorch's pretrained nets.

Coordinates here are continuous pixel coordinates: pixel (i, j) covers [j, j + 1) x [i, i + 1),
so a box (x1, y1, x2, y2) is the rectangle's edges and x2 - x1 its width in pixels.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import batched_nms, nms

from models import weights

# P-net is a fully convolutional 12 x 12 window classifier with stride 2 (one max-pool of 2).
PNET_WINDOW = 12
PNET_STRIDE = 2
RNET_INPUT = 24
ONET_INPUT = 48
# IoU above which a better P-net window suppresses another of the same level. Windows one cell
# apart overlap by IoU 0.71, diagonal neighbours by 0.53 and windows two cells apart by exactly
# 0.5. MTCNN's 0.5 drops the diagonal ones, and leaves the 0.5 ones to rounding; keeping both
# gives R-net and O-net more, slightly shifted, chances at a face: on 623 faces pasted into
# photos, 0 upright faces lost to facenet-pytorch instead of 2, for ~8% more time.
LEVEL_NMS = 0.6
# A pyramid level is resampled from the smallest exact 2x reduction of the photo that is at least
# this many times its size (see Pyramid).
SOURCE_RATIO = 2.0
# Work sizes that keep each forward pass's activations within a few MB of cache (measured on
# 2 cores: R-net 2x and P-net 1.5x faster than one big pass).
PNET_STRIP_PIXELS = 160_000
RNET_BATCH = 128
ONET_BATCH = 32
# O-net scores at or above this need no second opinion (see _output): in our tests checking them
# too changed no result and cost ~7% of the time on group photos.
SURE = 0.99

# A second opinion on O-net's doubtful boxes: (H x W x 3 uint8 RGB photo, M x 4 boxes, edges in
# photo pixels) -> M face probabilities, 0..1.
SecondOpinion = Callable[[np.ndarray, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Detections:
    """Faces found in one image, best score first.

    boxes: N x 4 float32, (x1, y1, x2, y2) edges in input-image pixels; may reach past the border.
    scores: N float32, 0..1: O-net's face probability for the box's crop, or, below SURE, the
        mean of that and the second opinion's (by default O-net's for the crop's mirror image).
    landmarks: N x 5 x 2 float32, (x, y) in input-image pixels: left eye, right eye, nose,
        left and right mouth corner as seen in the photo.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    @staticmethod
    def empty() -> Detections:
        return Detections(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        )


@dataclass(frozen=True)
class Level:
    """The photo at one scale, in the nets' input units, 1 x 3 x h x w float32 (planar memory).

    scale: (x, y) level pixels per photo pixel; they differ slightly because sizes are rounded.
    """

    pixels: torch.Tensor
    scale: tuple[float, float]


class Pyramid:
    """One photo's pyramid for one detection: P-net's levels, and crops for R-net and O-net.

    Levels are area-resampled (Pillow's box filter on uint8, ~5x faster than torch's area mode
    on floats): MTCNN was trained on area-resampled pyramids, and a wider bilinear filter blurs
    texture into faces (a false face on the astronaut's suit). Each level is resampled from the
    smallest exact 2x reduction of the photo that is still at least twice its size, which reads
    a fraction of the pixels and stays within ~1-2 grey levels of resampling the photo itself.
    The levels are resampled on as many threads as torch may use (Pillow lets go of Python's lock
    while it resamples): 20.6 -> 12.5 ms for a 1080p photo on 2 cores, the same pixels.
    """

    def __init__(self, image: np.ndarray, sizes: list[tuple[int, int]]) -> None:
        self.image = image
        height, width = image.shape[:2]
        reductions = {1: Image.fromarray(image)}
        plan = []
        for size in sizes:
            factor = 1
            while 2 * SOURCE_RATIO * factor * size[0] <= width and 2 * SOURCE_RATIO * factor * size[1] <= height:
                factor *= 2
                if factor not in reductions:
                    reductions[factor] = reductions[factor // 2].reduce(2)
            plan.append((size, factor))

        def resample(step: tuple[tuple[int, int], int]) -> np.ndarray:
            size, factor = step
            # The box keeps the photo's exact extent when a reduction rounded an odd side up.
            box = (0, 0, width / factor, height / factor)
            return np.asarray(reductions[factor].resize(size, Image.Resampling.BOX, box=box))

        workers = torch.get_num_threads()
        resampled = list(_pool(workers).map(resample, plan)) if workers > 1 and len(plan) > 1 else [resample(p) for p in plan]
        self.levels = [Level(_net_input(level), (size[0] / width, size[1] / height)) for level, (size, _) in zip(resampled, plan)]
        self._full: Level | None = None

    def crops(self, boxes: torch.Tensor, side: int) -> torch.Tensor:
        """side x side crops of square boxes (photo pixels), in box order.

        Each box is read from the smallest level that still holds it at >= side pixels (else
        from the full photo), with 2 x 2 bilinear samples averaged per output pixel: on an
        area-filtered level that is close to the area resampling MTCNN was trained with, at a
        fraction of the cost of averaging every photo pixel under a big box. (One sample per
        pixel, or the nearest level instead of the next larger one, cost faces and added false
        ones in our tests.) grid_sample is used over torchvision's roi_align, which does the same
        sampling, because it is vectorised and threaded: 2x faster on 2 cores.
        Parts outside the photo read as 0 (mid grey).
        """
        if len(boxes) == 0:
            return torch.zeros((0, 3, side, side))
        shrunk = [lv for lv in self.levels if max(lv.scale) < 1]
        widths = boxes[:, 2] - boxes[:, 0]
        # Levels shrink one after the other: the last one that holds a box at >= side px wins;
        # 0 stands for the full photo.
        choice = torch.zeros(len(boxes), dtype=torch.long)
        for index, level in enumerate(shrunk, start=1):
            choice[widths * min(level.scale) >= side] = index
        order = torch.argsort(choice, stable=True)
        # Sample points: centres of a (2 side) x (2 side) grid over each box.
        steps = (torch.arange(2 * side) + 0.5) / (2 * side)
        parts = []
        for index in torch.unique(choice).tolist():
            level = shrunk[index - 1] if index > 0 else self.full
            picked = boxes[choice == index]
            height, width = level.pixels.shape[2:]
            # grid_sample's units: -1 and +1 are the level's outer edges (align_corners=False).
            x = (picked[:, 0:1] + steps * (picked[:, 2:3] - picked[:, 0:1])) * (2 * level.scale[0] / width) - 1
            y = (picked[:, 1:2] + steps * (picked[:, 3:4] - picked[:, 1:2])) * (2 * level.scale[1] / height) - 1
            grid = torch.stack(torch.broadcast_tensors(x[:, None, :], y[:, :, None]), dim=3)
            # expand() shares the level's memory across the batch: no copies.
            parts.append(F.grid_sample(level.pixels.expand(len(picked), -1, -1, -1), grid, align_corners=False))
        samples = torch.cat(parts)
        # The mean of each 2 x 2 block of samples (3x faster than avg_pool2d here).
        pooled = (samples[:, :, 0::2, 0::2] + samples[:, :, 1::2, 0::2] + samples[:, :, 0::2, 1::2]
                  + samples[:, :, 1::2, 1::2]) * 0.25
        return pooled[torch.argsort(order)]

    @property
    def full(self) -> Level:
        """The photo at its own size; made only when a box is too small for every level."""
        if self._full is None:
            self._full = Level(_net_input(self.image), (1.0, 1.0))
        return self._full


class PNetRunner:
    """facenet-pytorch's P-net (its layers and weights), run as the same function but faster:
    the 2 x 2 max-pool as two elementwise maxima (torch's max_pool2d also computes indices and
    is 3x slower), only the face probability computed over the whole map (a softmax over (not
    face, face) is the sigmoid of their difference: one 1 x 1 output channel instead of six),
    and the box offsets only at the cells that pass the threshold.
    """

    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net
        scores = net.conv4_1  # (not face, face) logits
        weight, bias = scores.weight.detach(), scores.bias.detach()
        self.face_weight = (weight[1:2] - weight[0:1]).contiguous(memory_format=torch.channels_last)
        self.face_bias = bias[1:2] - bias[0:1]
        offsets = net.conv4_2  # box offsets, 4 channels
        self.offset_weight = offsets.weight.detach().flatten(1).T.contiguous()  # 32 x 4
        self.offset_bias = offsets.bias.detach()

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """1 x 3 x H x W in net units -> the heads' input, 1 x 32 x h x w."""
        net = self.net
        x = net.prelu1(net.conv1(pixels))
        height, width = x.shape[2:]
        if height % 2 or width % 2:  # ceil mode: a last, partial window over what is there
            x = F.pad(x, (0, width % 2, 0, height % 2), value=float("-inf"))
        x = torch.maximum(x[:, :, 0::2], x[:, :, 1::2])
        x = torch.maximum(x[:, :, :, 0::2], x[:, :, :, 1::2])
        return net.prelu3(net.conv3(net.prelu2(net.conv2(x))))

    def __call__(self, pixels: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """1 x 3 x H x W in net units -> (face probability h x w; the flat indices (row-major) of
        the K cells whose probability is >= threshold; their box offsets, K x 4)."""
        x = self.features(pixels)
        face = torch.sigmoid(F.conv2d(x, self.face_weight, self.face_bias))[0, 0]
        cells = torch.nonzero(face.flatten() >= threshold).flatten()
        width = face.shape[1]
        at = x[0, :, cells.div(width, rounding_mode="floor"), cells % width]  # 32 x K
        return face, cells, at.T @ self.offset_weight + self.offset_bias


def _max_pool(x: torch.Tensor, kernel: int, stride: int = 2) -> torch.Tensor:
    """nn.MaxPool2d(kernel, stride, ceil_mode=True) as elementwise maxima of strided views (torch's
    max_pool2d also computes indices: 1.3-10x slower on R- and O-net's small maps)."""
    height, width = x.shape[2:]

    def out(size: int) -> int:
        n = -(-(size - kernel) // stride) + 1
        return n - 1 if (n - 1) * stride >= size else n  # the last window must start inside

    rows, cols = out(height), out(width)
    pad_h, pad_w = (rows - 1) * stride + kernel - height, (cols - 1) * stride + kernel - width
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, max(pad_w, 0), 0, max(pad_h, 0)), value=float("-inf"))
    y = x[:, :, 0 : stride * (rows - 1) + 1 : stride]
    for dy in range(1, kernel):
        y = torch.maximum(y, x[:, :, dy : dy + stride * (rows - 1) + 1 : stride])
    z = y[:, :, :, 0 : stride * (cols - 1) + 1 : stride]
    for dx in range(1, kernel):
        z = torch.maximum(z, y[:, :, :, dx : dx + stride * (cols - 1) + 1 : stride])
    return z


class RNetRunner:
    """facenet-pytorch's R-net run as the same function: max-pools as maxima (`_max_pool`) and only
    the face probability of its softmax (the sigmoid of the logits' difference)."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net

    def __call__(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """N x 3 x 24 x 24 crops in net units -> (box offsets N x 4, face probability N)."""
        net = self.net
        x = _max_pool(net.prelu1(net.conv1(crops)), 3)
        x = _max_pool(net.prelu2(net.conv2(x)), 3)
        x = net.prelu3(net.conv3(x))
        # facenet-pytorch flattens in (width, height, channel) order.
        x = net.prelu4(net.dense4(x.permute(0, 3, 2, 1).reshape(len(x), -1)))
        logits = net.dense5_1(x)
        return net.dense5_2(x), torch.sigmoid(logits[:, 1] - logits[:, 0])


class ONetRunner:
    """facenet-pytorch's O-net run as the same function, as RNetRunner runs R-net."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net

    def __call__(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """N x 3 x 48 x 48 crops in net units -> (box offsets N x 4, landmarks N x 10 (five x, then
        five y, as fractions of the crop), face probability N)."""
        net = self.net
        x = _max_pool(net.prelu1(net.conv1(crops)), 3)
        x = _max_pool(net.prelu2(net.conv2(x)), 3)
        x = _max_pool(net.prelu3(net.conv3(x)), 2)
        x = net.prelu4(net.conv4(x))
        x = net.prelu5(net.dense5(x.permute(0, 3, 2, 1).reshape(len(x), -1)))
        logits = net.dense6_1(x)
        return net.dense6_2(x), net.dense6_3(x), torch.sigmoid(logits[:, 1] - logits[:, 0])


class Cascade:
    """MTCNN with facenet-pytorch's P/R/O-net weights, read from the installed package (no download).

    thresholds: face probability each stage needs to pass a window on (P, R, O).
    factor: ratio between the scales of neighbouring pyramid levels.
    second_opinion: who else judges O-net's doubtful boxes (see _output); None: O-net itself on
        the mirror image.
    Stateless between calls: one instance may serve many threads (so must the second opinion be).
    """

    def __init__(
        self,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        second_opinion: SecondOpinion | None = None,
    ) -> None:
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

        self.thresholds = thresholds
        self.factor = factor
        self.second_opinion = second_opinion
        # facenet-pytorch's classes, with their weights read from our verified (sha256-pinned) files.
        nets = []
        for net, weight_file in ((PNet(pretrained=False), weights.MTCNN_PNET), (RNet(pretrained=False), weights.MTCNN_RNET),
                                 (ONet(pretrained=False), weights.MTCNN_ONET)):
            net.load_state_dict(torch.load(weight_file.path(), map_location="cpu", weights_only=True))
            # channels_last weights make these small convolutions ~3x faster on CPU (oneDNN).
            nets.append(net.eval().to(memory_format=torch.channels_last))
        self.pnet, self.rnet, self.onet = nets
        # The same networks, run faster.
        self._pnet, self._rnet, self._onet = PNetRunner(self.pnet), RNetRunner(self.rnet), ONetRunner(self.onet)

    def __call__(self, image: np.ndarray, min_face: float = 20.0) -> Detections:
        """Faces at least `min_face` pixels wide in an H x W x 3 uint8 RGB image."""
        height, width = image.shape[:2]
        with torch.inference_mode():
            pyramid = Pyramid(image, self.pyramid(width, height, min_face))
            boxes = self._propose(pyramid)
            if len(boxes) == 0:
                return Detections.empty()
            boxes = self._refine(pyramid, boxes)
            if len(boxes) == 0:
                return Detections.empty()
            return self._output(pyramid, boxes)

    def pyramid(self, width: int, height: int, min_face: float) -> list[tuple[int, int]]:
        """Level sizes (width, height) in px: the first maps a `min_face`-pixel face onto
        P-net's 12-pixel window, each next one is `factor` times smaller, down to 12 px."""
        scale = PNET_WINDOW / min_face
        sizes = []
        while min(width, height) * scale >= PNET_WINDOW:
            sizes.append((max(PNET_WINDOW, round(width * scale)), max(PNET_WINDOW, round(height * scale))))
            scale *= self.factor
        return sizes

    def _propose(self, pyramid: Pyramid) -> torch.Tensor:
        """Stage 1: P-net over the pyramid -> M x 4 square candidate boxes (edges, photo pixels)."""
        if not pyramid.levels:
            return torch.zeros((0, 4))
        maps = [_pnet_in_strips(self._pnet, level.pixels, self.thresholds[0]) for level in pyramid.levels]
        # All levels' cells in one flat list, so that what follows is a few operations for the
        # whole pyramid rather than a dozen per level (small levels cost more in overhead).
        cells = torch.cat([found for _, found, _ in maps])
        if len(cells) == 0:
            return torch.zeros((0, 4))
        levels = torch.cat([torch.full((len(found),), i) for i, (_, found, _) in enumerate(maps)])
        widths = torch.tensor([face.shape[1] for face, _, _ in maps])[levels]
        ys, xs = cells.div(widths, rounding_mode="floor"), cells % widths
        scores = torch.cat([face.flatten()[found] for face, found, _ in maps])
        offsets = torch.cat([offs for _, _, offs in maps])
        # Output cell (y, x) saw the window [2x, 2x + 12) x [2y, 2y + 12) of its level.
        windows = torch.stack([xs, ys, xs, ys], dim=1).float() * PNET_STRIDE
        windows[:, 2:] += PNET_WINDOW
        # Suppression within each level runs on these exact integer windows, where the overlaps
        # of neighbours are the exact values LEVEL_NMS is chosen between.
        keep = batched_nms(windows, scores, levels, LEVEL_NMS)
        scale = torch.tensor([level.scale for level in pyramid.levels]).repeat(1, 2)
        windows = windows[keep] / scale[levels[keep]]
        scores, offsets = scores[keep], offsets[keep]
        # Across levels, on the windows as scanned (before regression moves them), as MTCNN does.
        keep = nms(windows, scores, 0.7)
        return _square(_regress(windows[keep], offsets[keep]))

    def _refine(self, pyramid: Pyramid, boxes: torch.Tensor) -> torch.Tensor:
        """Stage 2: R-net on 24 x 24 crops of all candidates, in batches -> squarer, fewer boxes."""
        offsets, face = _batched(self._rnet, pyramid.crops(boxes, RNET_INPUT), RNET_BATCH)
        passed = face > self.thresholds[1]
        boxes, face, offsets = boxes[passed], face[passed], offsets[passed]
        keep = nms(boxes, face, 0.7)
        return _square(_regress(boxes[keep], offsets[keep]))

    def _output(self, pyramid: Pyramid, boxes: torch.Tensor) -> Detections:
        """Stage 3: O-net on 48 x 48 crops -> final boxes, scores and landmarks."""
        crops = pyramid.crops(boxes, ONET_INPUT)
        offsets, points, face = _batched(self._onet, crops, ONET_BATCH)
        # O-net gives landmarks as fractions of its input crop: five x values, then five y values.
        size = (boxes[:, 2:] - boxes[:, :2]).unsqueeze(1)
        landmarks = boxes[:, None, :2] + torch.stack([points[:, :5], points[:, 5:]], dim=2) * size
        boxes = _regress(boxes, offsets)
        # A second opinion for doubtful boxes: texture that O-net takes for a face at ~0.8 often
        # is not one (a suit patch on a JPEG of the astronaut, connectors and cables of 17-21 px in
        # the ISS photos). Only boxes that can still reach the threshold on the mean (> 2t - 1)
        # and are not already sure are asked. The default asks O-net about the mirror image (a
        # face is a face both ways); it also sinks some real faces: small ones, and a 38-px face
        # of a group photo 500 px wide, at 0.956 and 0.432 mirrored (facedemo.detection asks
        # YuNet instead, which keeps those and drops more false faces: models/MODEL_CARD.md).
        doubtful = (face > 2 * self.thresholds[2] - 1) & (face < SURE)
        sure = face >= SURE
        if doubtful.any() and sure.any():
            # A doubtful box mostly inside a sure one is that face, which the suppression below
            # keeps: dropped without asking (~2/3 of the doubtful boxes on group photos).
            inside = (_min_overlap(boxes[doubtful], boxes[sure]) > 0.7).any(dim=1)
            dropped = torch.nonzero(doubtful).flatten()[inside]
            face[dropped], doubtful[dropped] = 0.0, False
        if doubtful.any():
            if self.second_opinion is None:
                other = _batched(self._onet, crops[doubtful].flip(3), ONET_BATCH)[2]
            else:
                other = self.second_opinion(pyramid.image, boxes[doubtful]).to(face.dtype)
            face[doubtful] = (face[doubtful] + other) / 2
        passed = face > self.thresholds[2]
        boxes, face, landmarks = boxes[passed], face[passed], landmarks[passed]
        # "Min" overlap: a box mostly inside a better one is the same face (MTCNN's last step).
        keep = _nms_min(boxes, face, 0.7)
        return Detections(
            boxes[keep].numpy().astype(np.float32),
            face[keep].numpy().astype(np.float32),
            landmarks[keep].numpy().astype(np.float32),
        )


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    """A pool of `workers` threads for resampling pyramid levels, made once per size."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mtcnn-pyramid")


def _net_input(rgb: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 RGB -> 1 x 3 x H x W float32 in the nets' units, (v - 127.5) / 128.

    Planar (NCHW) memory: grid_sample reads it directly, and the nets (channels-last weights)
    take it as fast as channels-last input.
    """
    # torch.from_numpy warns about read-only arrays (Pillow's, often callers'): copy those,
    # which costs little next to the float conversion.
    planar = torch.from_numpy(np.require(rgb, requirements=["C", "W"])).permute(2, 0, 1).unsqueeze(0)
    return planar.to(torch.float32, memory_format=torch.contiguous_format).sub_(127.5).mul_(1.0 / 128.0)


def _pnet_in_strips(
    pnet: PNetRunner, pixels: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """P-net over a level in horizontal strips whose activations stay in cache (~1.5x faster
    than one pass on a 1152 x 648 level), with the same outputs as one pass over the level:
    (face probability h x w, flat indices of the cells >= threshold, their offsets K x 4).

    Output row r sees input rows [2r, 2r + 12), so output rows [r0, r1) need input rows
    [2 r0, 2 r1 + 10); on an odd height the ceil-mode max-pool adds a last row that reads one
    row past the end, which the last strip (sliced to the end) produces as the whole level would.
    """
    height, width = pixels.shape[2:]
    out_rows = (height - 1) // 2 - 4  # conv 3, max-pool 2 (ceil), conv 3, conv 3
    out_width = (width - 1) // 2 - 4
    rows = max(1, PNET_STRIP_PIXELS // (PNET_STRIDE * width))
    outputs = [
        pnet(pixels[:, :, PNET_STRIDE * r0 : PNET_STRIDE * (r0 + rows) + PNET_WINDOW - PNET_STRIDE], threshold)
        for r0 in range(0, out_rows, rows)
    ]
    cells = [found + r0 * out_width for r0, (_, found, _) in zip(range(0, out_rows, rows), outputs)]
    return torch.cat([o[0] for o in outputs]), torch.cat(cells), torch.cat([o[2] for o in outputs])


def _batched(net: torch.nn.Module, crops: torch.Tensor, batch: int) -> tuple[torch.Tensor, ...]:
    """net over crops in batches of `batch` (activations that fit in cache: ~2x faster for R-net)."""
    outputs = [net(crops[i : i + batch]) for i in range(0, len(crops), batch)]
    return tuple(torch.cat(parts) for parts in zip(*outputs))


def _regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Apply a net's box offsets, given as fractions of the box's width and height."""
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + offsets * size


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """The square with the box's centre and its longer side (the nets expect square crops)."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).max(dim=1, keepdim=True).values / 2
    return torch.cat([centre - half, centre + half], dim=1)


def _min_overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """len(a) x len(b): each pair's intersection over the smaller box's area."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    return inter / torch.minimum(area_a[:, None], area_b[None, :]).clamp(min=1e-6)


def _nms_min(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy suppression by intersection over the smaller box's area; indices kept, best first."""
    order = torch.argsort(scores, descending=True)
    boxes = boxes[order]
    overlap = _min_overlap(boxes, boxes)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    keep = []
    # O-net leaves a handful of boxes, so a Python loop over them costs microseconds.
    for i in range(len(boxes)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlap[i] > threshold
    return order[torch.tensor(keep, dtype=torch.long)]
