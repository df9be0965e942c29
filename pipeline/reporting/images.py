"""Images embedded in HTML as data URIs, so a report is one file that opens anywhere."""
from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def jpeg_uri(rgb: np.ndarray, height: int = 64, quality: int = 80) -> str:
    img = Image.fromarray(np.asarray(rgb, dtype=np.uint8))
    width = max(1, round(img.width * height / img.height))
    buf = io.BytesIO()
    img.resize((width, height), Image.BILINEAR).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def figure_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
