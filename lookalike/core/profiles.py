"""Search profiles: one setting (`LOOKALIKE_SEARCH__PROFILE`) for a collection's quality levers.

Each profile is a configuration measured by `make eval` and chosen without the set it is
reported on (docs/QUALITY.md, "Profiles"); settings named explicitly win over the profile's.
The levers reach the collection at ingest (the model, DBA) and at search (alpha-QE,
verification), so a profile is chosen before a collection is built; changing the model part of
it later is a `lookalike reindex`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ProfileName = Literal["fast", "balanced", "quality", "instance"]
# The three offline EfficientNet-Lites, each at its own input size, descriptors joined.
ENSEMBLE = "efficientnet_lite0+efficientnet_lite1+efficientnet_lite2"


@dataclass(frozen=True, slots=True)
class Profile:
    """A named configuration, what collection it is for, and what it costs.

    `ingest_images_per_s` and `query_ms` were measured by `lookalike bench profiles` (part of
    `make eval`) on the CPU here (2 cores, ONNX Runtime): `lookalike ingest` of corel1k in wall
    time (model start, DBA and index seal included), and the median query searched by its bytes
    on a set of the profile's kind (corel1k; dvd_covers for instance).
    """

    name: ProfileName
    use: str
    backbone: str = "efficientnet_lite0"
    semantic_weight: float = 0.0
    dba_k: int = 0
    dba_alpha: float = 1.0
    qe_n: int = 0
    qe_alpha: float = 3.0
    verify: bool = False
    ingest_images_per_s: float = 0.0
    query_ms: float = 0.0

    def model_levers(self) -> dict[str, Any]:
        """The profile's model settings (they make the collection's model spec)."""
        return {"backbone": self.backbone, "semantic_weight": self.semantic_weight}

    def retrieval_levers(self) -> dict[str, Any]:
        """The profile's retrieval settings (DBA at ingest, QE and verification at search)."""
        return {"dba_k": self.dba_k, "dba_alpha": self.dba_alpha, "qe_n": self.qe_n,
                "qe_alpha": self.qe_alpha, "verify": self.verify}


PROFILES: dict[str, Profile] = {
    profile.name: profile for profile in (
        Profile("fast", "any collection, the cheapest: one network, nothing re-ranked",
                ingest_images_per_s=54.5, query_ms=14.4),
        # balanced and quality: chosen on imagenette_val224 by `lookalike bench presets`
        # (leave one set out) and reported on corel1k; both lose on instance sets.
        Profile("balanced", "category search (kinds of things, scenes): class posteriors, DBA "
                "and alpha-QE pull a class together; one network, DBA at ingest",
                semantic_weight=1.0, dba_k=10, dba_alpha=3.0, qe_n=20, qe_alpha=3.0,
                ingest_images_per_s=27.3, query_ms=15.1),
        Profile("quality", "category search at the best quality measured here: balanced's "
                "levers on three networks joined, about three times the embedding cost",
                backbone=ENSEMBLE, semantic_weight=1.0, dba_k=10, dba_alpha=3.0, qe_n=20,
                qe_alpha=3.0, ingest_images_per_s=10.4, query_ms=62.3),
        Profile("instance", "instance search (the same object, cover or place photographed "
                "again): geometric verification of the top 100 by local features",
                verify=True, ingest_images_per_s=30.6, query_ms=128.9),
    )
}
