"""Write the test composite: scikit-image's coffee photo (resized to 800x600) with the astronaut's
head pasted at 170x190, 85x95 and 51x57 px and the cameraman's head (120x150, grey) from
camera.png: four faces at different sizes, all from photos bundled with scikit-image.

    python examples/face-detection/composite.py composite.png

tests/test_face.py uses the same image (``composite_png``).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path


def composite_png() -> bytes:
    """The composite as PNG bytes (deterministic: same bytes for the same Pillow and scikit-image)."""
    import skimage.data
    from PIL import Image

    photos = Path(skimage.data.__file__).parent
    bg = Image.open(photos / "coffee.png").convert("RGB").resize((800, 600))
    head = Image.open(photos / "astronaut.png").convert("RGB").crop((140, 20, 310, 210))
    bg.paste(head, (40, 40))
    bg.paste(head.resize((85, 95)), (330, 80))
    bg.paste(head.resize((51, 57)), (520, 60))
    bg.paste(Image.open(photos / "camera.png").convert("RGB").crop((170, 80, 290, 230)), (560, 330))
    out = io.BytesIO()
    bg.save(out, format="PNG")
    return out.getvalue()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: composite.py OUT.png", file=sys.stderr)
        sys.exit(2)
    Path(sys.argv[1]).write_bytes(composite_png())
