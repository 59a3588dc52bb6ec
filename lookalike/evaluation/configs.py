"""Evaluation configurations: which quality levers are on, with which parameters.

Every lever here is the one the product runs (embedder TTA, PCA whitening, DBA at ingest,
alpha-QE and geometric verification at query time); `lookalike eval --ablation` measures each.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from lookalike.core.errors import ConfigError
from lookalike.core.profiles import ENSEMBLE, PROFILES, Profile


@dataclass(frozen=True, slots=True)
class EvalConfig:
    """One configuration of the quality levers."""

    name: str
    backbone: str = "efficientnet_lite0"
    pooling: str = "gem"
    gem_p: float = 1.0
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    semantic_weight: float = 0.0
    whiten: bool = False
    whiten_dim: int = 512
    whiten_power: float = 0.5
    dba_k: int = 0
    dba_alpha: float = 1.0
    qe_n: int = 0
    qe_alpha: float = 3.0
    verify: bool = False
    verify_top_n: int = 100

    def embed_key(self) -> dict[str, Any]:
        """What the descriptors depend on (configurations sharing it share cached descriptors)."""
        return {"backbone": self.backbone, "pooling": self.pooling, "gem_p": self.gem_p,
                "scales": list(self.scales), "flip": self.flip,
                "semantic_weight": self.semantic_weight}

    def levers(self) -> str:
        """A short description of what is on."""
        parts = [self.backbone]
        if self.pooling != "gem" or self.gem_p != 1.0:
            parts.append(f"{self.pooling}" + (f"(p={self.gem_p:g})" if self.pooling == "gem" else ""))
        if self.scales != (1.0,) or self.flip:
            parts.append("tta(" + ",".join(f"{s:.3g}" for s in self.scales)
                         + (",flip" if self.flip else "") + ")")
        if self.semantic_weight:
            parts.append(f"semantic(w={self.semantic_weight:g})")
        if self.whiten:
            kind = "pca" if self.whiten_power == 0 else "pcaw"
            parts.append(f"{kind}(d={self.whiten_dim},pow={self.whiten_power:g})")
        if self.dba_k:
            parts.append(f"dba(k={self.dba_k},a={self.dba_alpha:g})")
        if self.qe_n:
            parts.append(f"aqe(n={self.qe_n},a={self.qe_alpha:g})")
        if self.verify:
            parts.append(f"verify(top{self.verify_top_n})")
        return " + ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        out = asdict(self)
        out["scales"] = list(self.scales)
        return out


BASELINE = EvalConfig(name="baseline")
_SCALES = (1.0, 1.0 / math.sqrt(2.0), 0.5)

# The best configurations that run on the CPU here, chosen from the ablation in
# docs/QUALITY.md. Category search and instance search want different levers (as a collection
# is configured for one or the other): neighbour averaging (DBA, QE) and the class posterior
# pull a class together but blur the few true matches of an object; verification finds those.
# For category search: the ensemble, its class posteriors joined at half weight, DBA and
# alpha-QE; chosen from a grid on corel1k and imagenette (docs/QUALITY.md, "Choosing best").
BEST_CLASS = EvalConfig(
    name="best", backbone=ENSEMBLE, semantic_weight=0.5, dba_k=30, dba_alpha=3.0, qe_n=20,
    qe_alpha=3.0,
)
BEST_INSTANCE = EvalConfig(name="best", verify=True)
BEST = {"class": BEST_CLASS, "instance": BEST_INSTANCE}

# Each lever alone on top of the baseline.
SINGLE_LEVERS: tuple[EvalConfig, ...] = (
    replace(BASELINE, name="+mac", pooling="mac"),
    replace(BASELINE, name="+gem3", gem_p=3.0),
    replace(BASELINE, name="+rmac", pooling="rmac"),
    replace(BASELINE, name="+tta", scales=_SCALES, flip=True),
    replace(BASELINE, name="+semantic", semantic_weight=1.0),
    replace(BASELINE, name="+ensemble", backbone=ENSEMBLE),
    replace(BASELINE, name="+whiten", whiten=True),
    # Pure PCA (no whitening): the dimension cut alone, what memory it saves at what quality.
    replace(BASELINE, name="+pca256", whiten=True, whiten_dim=256, whiten_power=0.0),
    replace(BASELINE, name="+dba", dba_k=20, dba_alpha=1.0),
    replace(BASELINE, name="+qe", qe_n=10, qe_alpha=3.0),
    replace(BASELINE, name="+verify", verify=True),
)


def leave_one_out(best: EvalConfig) -> list[EvalConfig]:
    """The best configuration with each of its levers turned off in turn."""
    out: list[EvalConfig] = []
    if best.backbone != BASELINE.backbone:
        out.append(replace(best, name="best-ensemble", backbone=BASELINE.backbone))
    if best.scales != (1.0,) or best.flip:
        out.append(replace(best, name="best-tta", scales=(1.0,), flip=False))
    if best.semantic_weight:
        out.append(replace(best, name="best-semantic", semantic_weight=0.0))
    if best.whiten:
        out.append(replace(best, name="best-whiten", whiten=False))
    if best.dba_k:
        out.append(replace(best, name="best-dba", dba_k=0))
    if best.qe_n:
        out.append(replace(best, name="best-qe", qe_n=0))
    if best.verify:
        out.append(replace(best, name="best-verify", verify=False))
    return out


def ablation(kind: str = "class") -> list[EvalConfig]:
    """Baseline, each lever on alone, the best configuration for this kind of dataset (class or
    instance), and that best with each of its levers off."""
    best = BEST[kind]
    return [BASELINE, *SINGLE_LEVERS, best, *leave_one_out(best)]


def profile_config(profile: Profile) -> EvalConfig:
    """The configuration a search profile (LOOKALIKE_SEARCH__PROFILE) serves."""
    return replace(BASELINE, name=profile.name, backbone=profile.backbone,
                   semantic_weight=profile.semantic_weight, dba_k=profile.dba_k,
                   dba_alpha=profile.dba_alpha, qe_n=profile.qe_n, qe_alpha=profile.qe_alpha,
                   verify=profile.verify)


def preset(name: str, kind: str = "class") -> EvalConfig:
    """The configuration called `name`: a search profile's (fast, balanced, instance), or one
    of the ablation's, where `best` and `best-*` are those for this kind of dataset."""
    known: dict[str, EvalConfig] = {c.name: c for c in ablation(kind)}
    known.update((p.name, profile_config(p)) for p in PROFILES.values())
    if name not in known:
        raise ConfigError(f"unknown evaluation configuration {name!r}; known: {', '.join(known)}")
    return known[name]
