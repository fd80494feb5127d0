"""The FID network: Inception-v3 of TensorFlow's FID code as ported by pytorch-fid (weights
file ``pt_inception-2015-12-05-6726825d.pth``), up to its pool3 features (2048-d).

The architecture is torchvision's Inception3 (Szegedy et al. 2016, "Rethinking the Inception
Architecture", Fig. 5–7) with pytorch-fid's FID patches, written here in plain torch with the
module names of that file, so its state dict loads strictly. Nothing is ever downloaded: the
weights come from a local file (an argument or ``$VAELAB_INCEPTION_WEIGHTS``), and the
feature name records its sha256, since FIDs of different networks are not comparable.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError, ConfigError, DataError
from ..registry import FEATURE_EXTRACTORS
from .sample_quality import FeatureExtractor

INCEPTION_ENV = "VAELAB_INCEPTION_WEIGHTS"
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's FID weights
INCEPTION_SIZE = 299


class BasicConv2d(nn.Module):
    """Conv without bias → BatchNorm (ε = 0.001, TensorFlow's) → ReLU; weights `conv`, `bn`."""

    def __init__(self, c_in: int, c_out: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def tf_avg_pool(x: Tensor) -> Tensor:
    """3×3 average pool, stride 1, that (like TensorFlow) averages over real pixels only."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def max_pool_same(x: Tensor) -> Tensor:
    """3×3 max pool, stride 1, 'same' size: the pool branch of the FID network's last block."""
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class InceptionA(nn.Module):
    """35×35 block: 1×1 | 5×5 | double 3×3 | pool → 64 + 64 + 96 + `pool_features` channels."""

    def __init__(self, c_in: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, 1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pool = self.branch_pool(tf_avg_pool(x))
        return torch.cat([self.branch1x1(x), b5, b3, pool], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 → 17: 3×3/2 | double 3×3 (last /2) | max pool/2 → 384 + 96 + c_in."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    """17×17 block with factorised 7×7 convolutions (1×7 then 7×1) → 4 × 192 channels."""

    def __init__(self, c_in: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7dbl = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4):
            b7dbl = conv(b7dbl)
        b7dbl = self.branch7x7dbl_5(b7dbl)
        pool = self.branch_pool(tf_avg_pool(x))
        return torch.cat([self.branch1x1(x), b7, b7dbl, pool], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 → 8: 3×3/2 | 7×7 then 3×3/2 | max pool/2 → 320 + 192 + c_in."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for conv in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = conv(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """8×8 block with split 1×3 / 3×1 branches → 320 + 768 + 768 + 192 = 2048 channels.

    `pool` is the pool branch's pooling: TensorFlow-style average in Mixed_7b, max in Mixed_7c
    (the FID network's quirk that pytorch-fid reproduces).
    """

    def __init__(self, c_in: int, pool=tf_avg_pool):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(c_in, 320, 1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        b3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3dbl = torch.cat([self.branch3x3dbl_3a(b3dbl), self.branch3x3dbl_3b(b3dbl)], 1)
        pool = self.branch_pool(self.pool(x))
        return torch.cat([self.branch1x1(x), b3, b3dbl, pool], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 up to the pool3 layer, as in pytorch-fid's `fid_inception_v3` (its
    `InceptionV3` with the default 2048-d output block).

    forward: images [N, C, H, W] in [0, 1], C = 1 (repeated to RGB) or 3 → bilinear resize to
    299×299 (align_corners=False) → scaled to [−1, 1] → pool3 features [N, 2048].
    The 1008-way logits layer `fc` of the weights file is not part of the network.
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool=tf_avg_pool)
        self.Mixed_7c = InceptionE(2048, pool=max_pool_same)

    def forward(self, images: Tensor) -> Tensor:
        if images.shape[1] not in (1, 3):
            raise DataError(f"Inception features need 1 or 3 channels, got {images.shape[1]}")
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        x = F.interpolate(
            x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False
        )
        x = 2.0 * x - 1.0
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def load_fid_inception(path: str | Path) -> FIDInceptionV3:
    """The FID Inception network with the weights of pytorch-fid's file at `path`.

    The file is read with ``torch.load(weights_only=True)`` (no code runs) and loaded strictly,
    except that the logits layer ``fc.*`` is dropped (pool3 features do not use it) and, as
    for any pre-1.0 PyTorch file, absent BatchNorm ``num_batches_tracked`` counters are allowed.
    Any problem is one `CheckpointError` line.
    """
    path = Path(path)
    hint = f"expected pytorch-fid's {INCEPTION_FILE}"
    if not path.is_file():
        raise CheckpointError(f"Inception weights {str(path)!r} do not exist ({hint})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — any failure means "not a weights file"
        detail = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise CheckpointError(
            f"{str(path)!r} is not a readable PyTorch weights file ({detail}; {hint})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{str(path)!r} does not hold a state dict of tensors ({hint})")
    # a plain dict (without the file's version metadata) lets BatchNorm fill in
    # num_batches_tracked where an old file lacks it
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    network = FIDInceptionV3()
    problem = _state_dict_mismatch(network, state)
    if problem:
        raise CheckpointError(f"{str(path)!r} does not fit the FID Inception network: {problem}")
    network.load_state_dict(state, strict=True)
    return network


def _state_dict_mismatch(network: nn.Module, state: dict[str, Tensor]) -> str:
    """'' when `state` fits `network` (strictly, bar num_batches_tracked), else a summary."""
    expected = network.state_dict()
    optional = {k for k in expected if k.endswith(".num_batches_tracked")}
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k} {list(state[k].shape)} ≠ {list(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    )
    parts = [
        f"{len(keys)} {what} (e.g. {keys[0]})"
        for what, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrongly shaped", wrong),
        )
        if keys
    ]
    return "; ".join(parts)


class InceptionV3Features(FeatureExtractor):
    """pool3 features (2048-d) of the FID Inception network, weights from a local file."""

    def __init__(self, weights: str | Path, device: torch.device | str = "cpu"):
        path = Path(weights)
        network = load_fid_inception(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
        name = f"inception-v3-fid(pool3, 2048-d, {path.name}, sha256 {digest})"
        super().__init__(name, network, device)


def inception_weights_path(inception_weights: str | Path | None = None) -> str | None:
    """The Inception weights file to use: the argument, else ``$VAELAB_INCEPTION_WEIGHTS``."""
    return str(inception_weights) if inception_weights else os.environ.get(INCEPTION_ENV) or None


@FEATURE_EXTRACTORS.register("inception")
def _inception(data, inception_weights, device, progress) -> InceptionV3Features:
    if not inception_weights:
        raise ConfigError(
            f"the inception feature extractor needs a weights file: pass inception_weights or "
            f"set ${INCEPTION_ENV} to a local copy of {INCEPTION_FILE}"
        )
    return InceptionV3Features(inception_weights, device)
