"""A small demo collection from the photographs that ship inside scikit-image (BSD/CC0 data)."""

from __future__ import annotations

from pathlib import Path

from lookalike.core.errors import ConfigError

# skimage.data file -> label; only files bundled in the wheel (nothing is downloaded).
DEMO_IMAGES: dict[str, str] = {
    "astronaut.png": "people",
    "camera.png": "people",
    "chelsea.png": "animals",
    "horse.png": "animals",
    "coffee.png": "objects",
    "coins.png": "objects",
    "rocket.jpg": "objects",
    "motorcycle_left.png": "objects",
    "motorcycle_right.png": "objects",
    "clock_motion.png": "objects",
    "hubble_deep_field.jpg": "space",
    "moon.png": "space",
    "ihc.png": "microscopy",
    "retina.jpg": "microscopy",
    "cell.png": "microscopy",
    "microaneurysms.png": "microscopy",
    "brick.png": "textures",
    "grass.png": "textures",
    "gravel.png": "textures",
    "page.png": "documents",
    "text.png": "documents",
    "logo.png": "graphics",
    "color.png": "graphics",
    "phantom.png": "graphics",
}


def write_demo_images(target: Path) -> Path:
    """Copy the demo photographs into `target/<label>/<file>` (kept when already there)."""
    try:
        import skimage.data
    except ImportError as exc:
        raise ConfigError(f"the demo needs scikit-image (pip install 'lookalike[demo]'): {exc}") from exc
    source = Path(skimage.data.__file__).parent
    for name, label in DEMO_IMAGES.items():
        destination = target / label / name
        if destination.exists():
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes((source / name).read_bytes())
    return target
