"""Fine-tuning a backbone for retrieval on labelled images.

Three losses on the retrieval descriptor d = l2n(GeM(features(x))):
- hash: a sigmoid latent layer of B bits and a classifier on it, trained with cross-entropy
  (Lin et al., "Deep learning of binary hash codes for fast image retrieval", CVPRW 2015); the
  latent layer's `sigmoid(W d + b) > 0.5` are the learned binary codes.
- triplet: batch-hard triplet loss (Hermans et al. 2017), batches of a few images per class.
- arcface: additive angular margin softmax (Deng et al., CVPR 2019).

The input side of the feature extractor stays frozen (`freeze`); its output for a few augmented
views of every training image is computed once and cached, so an epoch only runs the trainable
top layers: on a CPU that is what makes fine-tuning take minutes rather than hours. Batch norm
keeps its ImageNet statistics (the network stays in eval mode; small batches of a few classes
would give poor batch statistics). Deterministic for a seed on one machine and thread count.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from PIL import Image
from torch import nn

from lookalike.embedder import functional as LF
from lookalike.embedder.backbones import Backbone
from lookalike.embedder.errors import EmbedderError
from lookalike.embedder.layers import GeM
from lookalike.embedder.losses import LOSSES
from lookalike.embedder.transforms import resize, to_rgb

# Heads (and GeM's p) start from scratch, so they learn this many times faster than the backbone.
HEAD_LR_FACTOR = 10.0
TRIPLET_MARGIN = 0.2
ARCFACE_SCALE = 30.0
ARCFACE_MARGIN = 0.3
# Images per class in a triplet batch: batch-hard mining needs positives in the batch.
IMAGES_PER_CLASS = 4
# Random resized crop: area fraction and aspect ratio ranges (whole-scene photos: keep most).
CROP_SCALE = (0.35, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
EVAL_BATCH = 64

ImageInput = Image.Image | torch.Tensor
ValMap = Callable[[NDArray[np.float32], NDArray[np.int64]], float]


class TrainingError(EmbedderError):
    """Training that cannot start with what was given."""


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """How to fine-tune. `freeze` is the fraction of the feature extractor's parameters, from
    the input side, kept frozen; `views` augmented views of each training image are cached past
    the frozen layers (0: augment afresh every epoch, no cache)."""

    loss: str = "hash"
    bits: int = 48
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    freeze: float = 0.5
    learn_gem_p: bool = True
    patience: int = 3
    seed: int = 0
    input_size: int = 0
    views: int = 4
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise TrainingError(f"unknown loss {self.loss!r}; known: {', '.join(LOSSES)}")
        if not 0.0 <= self.freeze <= 1.0:
            raise TrainingError(f"freeze must be a fraction in [0, 1], got {self.freeze}")
        for name in ("epochs", "batch_size", "bits"):
            if getattr(self, name) < 1:
                raise TrainingError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.patience < 1 or self.views < 0 or self.lr <= 0:
            raise TrainingError("patience must be >= 1, views >= 0 and lr > 0")


@dataclass(frozen=True, slots=True)
class EpochLog:
    """One epoch: mean training loss, validation mAP after it, and its wall-clock seconds.
    Epoch 0 is the starting point (no training, loss NaN)."""

    epoch: int
    train_loss: float
    val_map: float
    seconds: float


@dataclass(slots=True)
class TrainResult:
    """The best epoch's weights (the root model's state dict, as a weights file holds it), GeM
    p and hash layer, with the per-epoch history."""

    root_state: dict[str, torch.Tensor]
    gem_p: float
    hash_weight: NDArray[np.float32] | None
    hash_bias: NDArray[np.float32] | None
    history: list[EpochLog]
    best_epoch: int
    stopped_early: bool
    cancelled: bool
    initial_val_map: float = float("nan")
    best_val_map: float = float("nan")
    extra: dict[str, float] = field(default_factory=dict)


class _Stage(nn.Module):
    """One callable step of a feature extractor, so it can be split where freezing stops."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], *parts: nn.Module) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _stages(features: nn.Module) -> list[nn.Module]:
    """The feature extractor as a chain of stages whose composition equals its forward."""
    if isinstance(features, nn.Sequential):
        return list(features.children())
    net = getattr(features, "net", None)
    blocks = getattr(net, "_blocks", None)
    if net is not None and isinstance(blocks, nn.ModuleList):
        # EfficientNet-Lite's extract_features, one stage per block (same order, same ops).
        lite: nn.Module = net
        rate = float(getattr(getattr(lite, "_global_params", None), "drop_connect_rate", 0) or 0)

        def block_fn(block: nn.Module, idx: int) -> Callable[[torch.Tensor], torch.Tensor]:
            return lambda x: block(x, drop_connect_rate=rate * idx / len(blocks))

        swish, bn0, conv_stem, bn1, conv_head = (
            getattr(lite, name) for name in ("_swish", "_bn0", "_conv_stem", "_bn1", "_conv_head")
        )
        stem = _Stage(lambda x: swish(bn0(conv_stem(x))), conv_stem, bn0)
        head = _Stage(lambda x: swish(bn1(conv_head(x))), conv_head, bn1)
        return [stem, *(_Stage(block_fn(b, i), b) for i, b in enumerate(blocks)), head]
    return [features]


def _split(features: nn.Module, freeze: float) -> tuple[nn.Sequential, nn.Sequential]:
    """(frozen prefix, trainable suffix): the longest run of input-side stages holding at most
    `freeze` of the parameters is frozen; a single-stage extractor freezes its first parameters."""
    for p in features.parameters():
        p.requires_grad_(True)
    stages = _stages(features)
    sizes = [sum(p.numel() for p in s.parameters()) for s in stages]
    total = max(sum(p.numel() for p in features.parameters()), 1)
    budget = freeze * total
    cut = 0
    while cut < len(stages) and sum(sizes[:cut + 1]) <= budget:
        cut += 1
    prefix, suffix = nn.Sequential(*stages[:cut]), nn.Sequential(*stages[cut:])
    for p in prefix.parameters():
        p.requires_grad_(False)
    if cut == 0 and len(stages) == 1:
        seen = 0
        for p in features.parameters():
            if seen + p.numel() > budget:
                break
            p.requires_grad_(False)
            seen += p.numel()
    return prefix, suffix


class _ArcFace(nn.Module):
    """Additive angular margin logits: s cos(theta + m) for the true class, s cos(theta) else."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(classes, dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, d: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = (d @ F.normalize(self.weight, dim=1).T).clamp(-1 + 1e-7, 1 - 1e-7)
        sin = (1 - cos * cos).sqrt()
        m = ARCFACE_MARGIN
        with_margin = cos * math.cos(m) - sin * math.sin(m)
        # Past theta = pi - m, cos(theta + m) stops decreasing; use the linear fallback there.
        with_margin = torch.where(cos > math.cos(math.pi - m), with_margin,
                                  cos - math.sin(math.pi - m) * m)
        target = F.one_hot(labels, cos.shape[1]).bool()
        return ARCFACE_SCALE * torch.where(target, with_margin, cos)


def batch_hard_triplet(d: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over anchors with a positive of relu(hardest positive - hardest negative + margin),
    squared Euclidean distances between unit descriptors."""
    dist = (2 - 2 * d @ d.T).clamp(min=0)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=d.device)
    pos = torch.where(same & ~eye, dist, torch.full_like(dist, -1.0)).amax(dim=1)
    neg = torch.where(~same, dist, torch.full_like(dist, 5.0)).amin(dim=1)
    valid = (pos >= 0) & (neg < 5.0)
    if not valid.any():
        return d.sum() * 0.0
    return F.relu(pos[valid] - neg[valid] + margin).mean()


class _Heads(nn.Module):
    """The loss-specific layers on the descriptor."""

    def __init__(self, loss: str, dim: int, classes: int, bits: int) -> None:
        super().__init__()
        self.loss = loss
        self.latent: nn.Linear | None = None
        self.classifier: nn.Linear | None = None
        self.arcface: _ArcFace | None = None
        if loss == "hash":
            self.latent = nn.Linear(dim, bits)
            self.classifier = nn.Linear(bits, classes)
        elif loss == "arcface":
            self.arcface = _ArcFace(dim, classes)

    def forward(self, d: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.latent is not None and self.classifier is not None:
            return F.cross_entropy(self.classifier(torch.sigmoid(self.latent(d))), labels)
        if self.arcface is not None:
            return F.cross_entropy(self.arcface(d, labels), labels)
        return batch_hard_triplet(d, labels, TRIPLET_MARGIN)


def _as_pil(image: ImageInput) -> Image.Image:
    if isinstance(image, Image.Image):
        return to_rgb(image)
    array = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array)).convert("RGB")


def random_resized_crop(image: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    """A random crop of `CROP_SCALE` of the area and `CROP_RATIO` aspect, mirrored half the
    time, resized to `size` x `size`."""
    width, height = image.size
    area = width * height
    box = (0.0, 0.0, float(width), float(height))
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        w, h = math.sqrt(target * ratio), math.sqrt(target / ratio)
        if w <= width and h <= height:
            left, top = rng.uniform(0, width - w), rng.uniform(0, height - h)
            box = (left, top, left + w, top + h)
            break
    out = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
    return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else out


def _normalise(images: Sequence[Image.Image], mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    arrays = np.stack([np.asarray(im, dtype=np.uint8) for im in images])
    batch = torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div_(255.0)
    return (batch - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


class _Trainer:
    """State of one run: the split network, heads, optimiser and cached inputs."""

    def __init__(self, backbone: Backbone, gem_p: float, config: TrainConfig, classes: int) -> None:
        if backbone.root is None:
            raise TrainingError(f"backbone {backbone.name!r} has no root model to save weights of")
        self.backbone = backbone
        self.root: nn.Module = backbone.root
        self.config = config
        self.size = config.input_size or backbone.input_size
        self.prefix, self.suffix = _split(backbone.features, config.freeze)
        self.pool = GeM(p=gem_p, learnable=config.learn_gem_p)
        self.heads = _Heads(config.loss, backbone.channels, classes, config.bits)
        if config.loss == "hash" and config.bits > backbone.channels:
            raise TrainingError(f"{config.bits} bits need descriptors of at least that dimension, "
                                f"backbone {backbone.name!r} gives {backbone.channels}")
        self.root.eval()
        backbone.features.eval()
        backbone_params = [p for p in backbone.features.parameters() if p.requires_grad]
        head_params = list(self.heads.parameters())
        if config.learn_gem_p:
            head_params.append(self.pool.p)
        groups = [{"params": head_params, "lr": config.lr * HEAD_LR_FACTOR}]
        if backbone_params:
            groups.append({"params": backbone_params, "lr": config.lr})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)

    def descriptors(self, inputs: torch.Tensor) -> torch.Tensor:
        """Descriptors of prefix outputs (the suffix, GeM and L2N)."""
        return LF.l2n(self.pool(self.suffix(inputs)))

    def prefix_outputs(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The frozen prefix's output for already-sized images, in batches."""
        outs = []
        with torch.no_grad():
            for start in range(0, len(images), EVAL_BATCH):
                batch = _normalise(images[start:start + EVAL_BATCH], self.backbone.mean,
                                   self.backbone.std)
                outs.append(self.prefix(batch))
        return torch.cat(outs)

    def embed_cached(self, cached: torch.Tensor) -> NDArray[np.float32]:
        """Descriptors of cached prefix outputs, without gradients."""
        with torch.no_grad():
            parts = [self.descriptors(cached[s:s + EVAL_BATCH]) for s in range(0, len(cached), EVAL_BATCH)]
        return np.asarray(torch.cat(parts).numpy(), dtype=np.float32)

    def snapshot(self) -> tuple[dict[str, torch.Tensor], float, nn.Module]:
        state = {k: v.detach().clone() for k, v in self.root.state_dict().items()}
        return state, float(self.pool.p.detach().item()), copy.deepcopy(self.heads)


def _batches(
    labels: NDArray[np.int64], config: TrainConfig, rng: np.random.Generator
) -> list[NDArray[np.int64]]:
    """One epoch's batches: shuffled, or for triplet groups of IMAGES_PER_CLASS per class."""
    if config.loss != "triplet":
        order = rng.permutation(len(labels))
    else:
        groups: list[NDArray[np.int64]] = []
        for cls in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == cls))
            groups += [members[i:i + IMAGES_PER_CLASS] for i in range(0, len(members), IMAGES_PER_CLASS)]
        order = np.concatenate([groups[i] for i in rng.permutation(len(groups))])
    batches = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    # A batch of one breaks triplet mining and gives noisy steps: fold it into the previous one.
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches[-2] = np.concatenate([batches[-2], batches.pop()])
    return batches


def train(
    backbone: Backbone,
    gem_p: float,
    train_images: Sequence[ImageInput],
    train_labels: Sequence[int],
    val_images: Sequence[ImageInput],
    val_labels: Sequence[int],
    config: TrainConfig,
    *,
    val_map: ValMap,
    on_epoch: Callable[[EpochLog], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> TrainResult:
    """Fine-tune `backbone` in place (labels are class indices 0..C-1); returns the weights of
    the epoch with the best `val_map(descriptors, labels)` on the validation images, which the
    backbone's root model also holds on return. Stops early after `patience` epochs without
    improvement, or at the first check after `cancelled()` turns true."""
    if len(train_images) != len(train_labels) or len(val_images) != len(val_labels):
        raise TrainingError("one label per image is required")
    if len(train_images) < 2 or len(val_images) < 2:
        raise TrainingError("training needs at least 2 training and 2 validation images")
    y_train = np.asarray(train_labels, dtype=np.int64)
    y_val = np.asarray(val_labels, dtype=np.int64)
    classes = int(max(y_train.max(), y_val.max())) + 1
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    trainer = _Trainer(backbone, gem_p, config, classes)
    size = trainer.size
    is_cancelled = cancelled or (lambda: False)

    started = time.perf_counter()
    pil_train = [_as_pil(im) for im in train_images]
    val_cache = trainer.prefix_outputs([resize(_as_pil(im), size, "squash") for im in val_images])
    cache_views = config.views > 0 and len(trainer.prefix) > 0
    train_cache: list[torch.Tensor] = []
    if cache_views:
        for _ in range(config.views):
            if is_cancelled():
                break
            train_cache.append(trainer.prefix_outputs(
                [random_resized_crop(im, size, rng) for im in pil_train]))

    def evaluate() -> float:
        return float(val_map(trainer.embed_cached(val_cache), y_val))

    initial = evaluate()
    history = [EpochLog(0, float("nan"), initial, time.perf_counter() - started)]
    if on_epoch is not None:
        on_epoch(history[0])
    best: tuple[dict[str, torch.Tensor], float, nn.Module] | None = None
    best_map, best_epoch, since_best = -math.inf, 0, 0
    stopped_early = was_cancelled = False
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        if is_cancelled():
            was_cancelled = True
            break
        views = rng.integers(config.views, size=len(pil_train)) if cache_views else None
        losses: list[float] = []
        for batch in _batches(y_train, config, rng):
            if is_cancelled():
                was_cancelled = True
                break
            if views is not None:
                inputs = torch.stack([train_cache[views[i]][i] for i in batch])
            else:
                crops = [random_resized_crop(pil_train[i], size, rng) for i in batch]
                with torch.no_grad():
                    inputs = trainer.prefix(_normalise(crops, backbone.mean, backbone.std))
            loss = trainer.heads(trainer.descriptors(inputs), torch.from_numpy(y_train[batch]))
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.optimizer.step()
            with torch.no_grad():
                trainer.pool.p.clamp_(min=1.0)
            losses.append(float(loss.detach().item()))
        if was_cancelled:
            break
        score = evaluate()
        log = EpochLog(epoch, float(np.mean(losses)) if losses else float("nan"), score,
                       time.perf_counter() - epoch_start)
        history.append(log)
        if on_epoch is not None:
            on_epoch(log)
        if score > best_map:
            best, best_map, best_epoch, since_best = trainer.snapshot(), score, epoch, 0
        else:
            since_best += 1
            if since_best >= config.patience:
                stopped_early = epoch < config.epochs
                break

    if best is None:
        best = trainer.snapshot()
    state, p, heads = best
    trainer.root.load_state_dict(state)
    weight = bias = None
    latent = getattr(heads, "latent", None)
    if isinstance(latent, nn.Linear) and best_epoch > 0:
        weight = latent.weight.detach().numpy().astype(np.float32)
        bias = latent.bias.detach().numpy().astype(np.float32)
    return TrainResult(
        root_state=state, gem_p=p, hash_weight=weight, hash_bias=bias, history=history,
        best_epoch=best_epoch, stopped_early=stopped_early, cancelled=was_cancelled,
        initial_val_map=initial, best_val_map=best_map if best_epoch else initial,
    )
