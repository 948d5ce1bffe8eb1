"""Draw the integration's brand icon (brand/icon.png 256x256 and icon@2x.png 512x512).

An ESP32 module (chip with pins) with a circular "update" arrow on it. Run from the
repository root with the project's venv: .venv/bin/python script/draw_brand_icon.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

BRAND = Path(__file__).resolve().parents[1] / "custom_components" / "esp_ota" / "brand"
BLUE = (3, 169, 244, 255)  # Home Assistant's primary blue
DARK = (38, 50, 56, 255)
PIN = (176, 190, 197, 255)
WHITE = (255, 255, 255, 255)


def draw(size: int) -> Image.Image:
    """The icon at `size` x `size` pixels, drawn at 4x and scaled down for smooth edges."""
    scale = 4
    canvas = size * scale
    unit = canvas / 256
    image = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    pen = ImageDraw.Draw(image)

    def box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        return (x0 * unit, y0 * unit, x1 * unit, y1 * unit)

    # Pins on all four sides of the chip.
    for i in range(6):
        offset = 62 + i * 26
        pen.rounded_rectangle(box(offset - 5, 14, offset + 5, 46), radius=3 * unit, fill=PIN)
        pen.rounded_rectangle(box(offset - 5, 210, offset + 5, 242), radius=3 * unit, fill=PIN)
        pen.rounded_rectangle(box(14, offset - 5, 46, offset + 5), radius=3 * unit, fill=PIN)
        pen.rounded_rectangle(box(210, offset - 5, 242, offset + 5), radius=3 * unit, fill=PIN)
    # The chip body.
    pen.rounded_rectangle(box(36, 36, 220, 220), radius=22 * unit, fill=DARK)
    pen.rounded_rectangle(box(52, 52, 204, 204), radius=14 * unit, fill=BLUE)
    # A circular arrow: the update.
    pen.arc(box(82, 82, 174, 174), start=30, end=320, fill=WHITE, width=round(16 * unit))
    pen.polygon(
        [(166 * unit, 72 * unit), (190 * unit, 118 * unit), (142 * unit, 112 * unit)],
        fill=WHITE,
    )
    return image.resize((size, size), Image.Resampling.LANCZOS)


def main() -> None:
    """Write both sizes."""
    BRAND.mkdir(parents=True, exist_ok=True)
    draw(256).save(BRAND / "icon.png", optimize=True)
    draw(512).save(BRAND / "icon@2x.png", optimize=True)


if __name__ == "__main__":
    main()
