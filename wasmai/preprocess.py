"""Reference image preprocessing: the Python twin of what a built component does to an image.

One function, :func:`preprocess_image`, implements ``manifest.Preprocess`` exactly; calibration
(``convert --quantize static``), validation and ``bench``'s native reference all call it, so
they all see the same tensor for the same photo:

1. decode with Pillow, convert to 8-bit RGB (palette, grey, alpha and 16-bit images included;
   alpha is dropped, not composited);
2. ``resize_shorter``: scale so the shorter side is that many pixels, aspect ratio kept, the
   longer side rounded to the nearest pixel, bilinear filter (``PIL.Image.Resampling.BILINEAR``, which
   antialiases when downscaling);
3. ``crop``: centre crop of (height, width); the top-left corner is
   ``((W - w) // 2, (H - h) // 2)``. If the image is smaller than the crop it is first resized
   (bilinear) so that both sides cover the crop, aspect kept;
4. channel order RGB or BGR;
5. ``(x - mean[c]) / std[c]`` on 0..255 values in float32;
6. layout NCHW ``(1, 3, h, w)`` or NHWC ``(1, h, w, 3)``, C-contiguous float32.

Only numpy and Pillow are used.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wasmai.errors import WasmaiError
from wasmai.manifest import Preprocess

if TYPE_CHECKING:
    from numpy.typing import NDArray
    from PIL import Image

#: File extensions treated as images when a folder is given (lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Decode an image file into an 8-bit RGB ``PIL.Image.Image`` (fully loaded, file closed).

    Raises :class:`WasmaiError` naming the file if it is missing or Pillow cannot decode it.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16/32-bit grey: scale to 8 bits rather than clipping.
                arr = np.asarray(img, dtype=np.float64)
                top = float(arr.max()) or 1.0
                return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
            return img.convert("RGB")
    except FileNotFoundError:
        raise WasmaiError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise WasmaiError(f"cannot read image {path}: {exc}") from None


def preprocess_image(image: str | os.PathLike[str] | Image.Image, pre: Preprocess) -> NDArray[np.float32]:
    """Turn an image (a path or an RGB ``PIL.Image``) into the model input tensor.

    Returns float32 of shape ``(1, 3, crop_h, crop_w)`` for NCHW or ``(1, crop_h, crop_w, 3)``
    for NHWC; values are ``(pixel - mean[c]) / std[c]`` with pixel in 0..255 and channels in
    ``pre.color`` order. Raises :class:`WasmaiError` if a path cannot be read or decoded.
    """
    from PIL import Image

    img = load_image(image) if isinstance(image, (str, os.PathLike)) else image.convert("RGB")
    crop_h, crop_w = pre.crop
    if pre.resize_shorter is not None:
        w, h = img.size
        scale = pre.resize_shorter / min(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        if size != (w, h):
            img = img.resize(size, Image.Resampling.BILINEAR)
    w, h = img.size
    if w < crop_w or h < crop_h:
        scale = max(crop_w / w, crop_h / h)
        img = img.resize((max(crop_w, round(w * scale)), max(crop_h, round(h * scale))),
                         Image.Resampling.BILINEAR)
        w, h = img.size
    left, top = (w - crop_w) // 2, (h - crop_h) // 2
    img = img.crop((left, top, left + crop_w, top + crop_h))
    x: NDArray[Any] = np.asarray(img, dtype=np.float32)  # (h, w, 3), RGB, 0..255
    if pre.color == "BGR":
        x = x[:, :, ::-1]
    x = (x - np.asarray(pre.mean, dtype=np.float32)) / np.asarray(pre.std, dtype=np.float32)
    if pre.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None], dtype=np.float32)


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files directly inside ``folder`` (by extension, see :data:`IMAGE_EXTENSIONS`),
    sorted by name. Raises :class:`WasmaiError` if the folder is missing or holds no image."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WasmaiError(f"not a folder: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise WasmaiError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return files


def preprocess_images(paths: Iterable[str | os.PathLike[str]], pre: Preprocess) -> list[NDArray[np.float32]]:
    """:func:`preprocess_image` on each path; one ``(1, ...)`` float32 tensor per image.
    Raises :class:`WasmaiError` on the first unreadable image."""
    return [preprocess_image(Path(p), pre) for p in paths]
