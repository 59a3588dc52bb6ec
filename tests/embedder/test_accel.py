"""Device plans: precision, memory format, compilation, batch sizes and the device feeder; the
GPU-only paths run where CUDA is present and are skipped with the reason elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lookalike.embedder.accel import (
    AccelUnsupported,
    DeviceFeeder,
    plan_for,
    tuned_batch_size,
    tuned_queue_batches,
)
from lookalike.embedder.runtime import Embedder, EmbedderConfig
from lookalike.embedder.transforms import normalise
from tests.conftest import gradient_image, needs_cuda

CPU = torch.device("cpu")
CUDA = torch.device("cuda")
# Small and quick: the accel paths do not depend on the backbone.
SMALL = dict(backbone="mobilenet_v2", threads=2, input_size=64)


def _images(n: int = 5) -> list[Image.Image]:
    return [gradient_image(80, 90, seed=s) for s in range(n)]


@pytest.fixture(scope="module")
def fp32_vectors() -> np.ndarray:
    return Embedder(EmbedderConfig(**SMALL)).embed_images(_images())  # type: ignore[arg-type]


def test_auto_plan_is_fp32_on_the_cpu_and_fp16_channels_last_on_cuda() -> None:
    """`auto` keeps the CPU path as it was and turns on fp16 and NHWC on CUDA."""
    cpu = plan_for(CPU)
    assert (cpu.dtype, cpu.channels_last, cpu.compile) == (None, False, False)
    cuda = plan_for(CUDA)
    assert (cuda.dtype, cuda.channels_last) == (torch.float16, True)
    assert cuda.describe() == "cuda fp16 channels_last"
    assert plan_for(CPU, "bf16", "on", True).describe() == "cpu bf16 channels_last compiled"


def test_fp16_on_the_cpu_is_refused_with_the_alternatives() -> None:
    """fp16 autocast is a CUDA feature: asking for it on the CPU names bf16 and fp32."""
    with pytest.raises(AccelUnsupported, match="bf16 or fp32"):
        plan_for(CPU, "fp16")
    with pytest.raises(AccelUnsupported, match="fp16 needs a CUDA device"):
        Embedder(EmbedderConfig(device="cpu", precision="fp16"))


def test_batch_size_is_configured_or_tuned_per_family_and_device() -> None:
    """A configured size wins; else the engine's on the CPU, the family's size on CUDA, less for
    big inputs."""
    assert tuned_batch_size("resnet50", CPU) == 8
    assert tuned_batch_size("resnet50", CPU, engine="onnxruntime") == 16
    assert tuned_batch_size("resnet50", CUDA) == 256
    assert tuned_batch_size("mobilenet_v3_large", CUDA) == 512
    assert tuned_batch_size("vgg16", CUDA) == 128
    assert tuned_batch_size("some_new_net", CUDA) == 128
    assert tuned_batch_size("resnet50", CUDA, input_size=448) == 64
    assert tuned_batch_size("resnet50", CUDA, configured=7) == 7
    assert tuned_queue_batches(CPU) == 2
    assert tuned_queue_batches(CUDA) == 4
    assert tuned_queue_batches(CUDA, configured=9) == 9
    assert Embedder(EmbedderConfig(device="cpu")).batch_size == 16
    assert Embedder(EmbedderConfig(device="cpu", engine="torch")).batch_size == 8


def test_feeder_on_the_cpu_hands_the_tensor_through() -> None:
    """Without CUDA there is nothing to copy: the feeder returns the host tensor itself."""
    host = torch.zeros(2, 8, 8, 3, dtype=torch.uint8)
    assert DeviceFeeder(CPU).to_device(host) is host


def test_normalise_in_channels_last_keeps_the_values() -> None:
    """NHWC changes the memory layout only."""
    batch = torch.randint(0, 256, (2, 16, 16, 3), dtype=torch.uint8)
    plain = normalise(batch, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    nhwc = normalise(batch, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), channels_last=True)
    assert nhwc.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(plain, nhwc)


def test_bf16_on_the_cpu_gives_unit_float32_descriptors_close_to_fp32(
    fp32_vectors: np.ndarray,
) -> None:
    """Reduced precision moves descriptors a little; they stay float32 and unit norm."""
    vectors = Embedder(EmbedderConfig(**SMALL, precision="bf16")).embed_images(_images())  # type: ignore[arg-type]
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert (vectors * fp32_vectors).sum(axis=1).min() > 0.99


def test_channels_last_on_the_cpu_matches_the_default_layout(fp32_vectors: np.ndarray) -> None:
    """The memory format is a speed choice: the descriptors do not change."""
    vectors = Embedder(EmbedderConfig(**SMALL, channels_last="on")).embed_images(_images())  # type: ignore[arg-type]
    np.testing.assert_allclose(vectors, fp32_vectors, atol=1e-5)


def test_compiled_network_gives_the_same_descriptors(fp32_vectors: np.ndarray) -> None:
    """torch.compile (inductor, on the CPU here) is an optimisation only."""
    embedder = Embedder(EmbedderConfig(**SMALL, compile=True))  # type: ignore[arg-type]
    np.testing.assert_allclose(embedder.embed_images(_images()), fp32_vectors, atol=1e-4)


def test_batches_overlap_but_results_keep_input_order(fp32_vectors: np.ndarray) -> None:
    """With batches of 2, five images go as three launches; each row is still its image's."""
    embedder = Embedder(EmbedderConfig(**SMALL, batch_size=2))  # type: ignore[arg-type]
    np.testing.assert_allclose(embedder.embed_images(_images()), fp32_vectors, atol=1e-5)


def test_warm_up_runs_at_load_and_changes_nothing(fp32_vectors: np.ndarray) -> None:
    """Warm-up is part of loading; a cold embedder gives the same descriptors."""
    cold = Embedder(EmbedderConfig(**SMALL, warmup=False))  # type: ignore[arg-type]
    np.testing.assert_allclose(cold.embed_images(_images()), fp32_vectors, atol=1e-5)


@needs_cuda
def test_cuda_fp16_descriptors_match_cpu_fp32(fp32_vectors: np.ndarray) -> None:
    """On CUDA the default plan (fp16, NHWC, side-stream copies) gives the CPU's descriptors."""
    embedder = Embedder(EmbedderConfig(**SMALL, device="cuda"))  # type: ignore[arg-type]
    assert embedder.plan.dtype == torch.float16
    vectors = embedder.embed_images(_images())
    assert (vectors * fp32_vectors).sum(axis=1).min() > 0.999


@needs_cuda
def test_cuda_feeder_copies_through_pinned_memory_on_a_side_stream() -> None:
    """The copy lands on the device with the host's values."""
    host = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    moved = DeviceFeeder(CUDA).to_device(host)
    assert moved.device.type == "cuda"
    assert torch.equal(moved.cpu(), host)
