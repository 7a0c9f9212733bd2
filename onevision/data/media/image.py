"""Image decoding through PIL: any file PIL can read becomes an upright 8-bit RGB image.

What each kind of input becomes:

* EXIF (or XMP) Orientation is applied with ``ImageOps.exif_transpose``, so a phone photo
  stored sideways with Orientation 6 comes out upright; :func:`image_size` reports the
  upright size too (a 90-degree rotation swaps width and height).
* Transparency (RGBA, LA, PA, premultiplied modes, palette or grey/RGB images with a tRNS
  colour key) is composited over white. Dropping the alpha channel instead (what
  ``Image.convert("RGB")`` does) exposes whatever colour hides under transparent pixels,
  usually black, which makes black text and line art on transparent backgrounds vanish;
  white is the page colour documents, logos and diagrams were drawn for.
* CMYK goes through PIL's formula R = (255 - C) * (255 - K) / 255 (likewise G, B); an
  embedded ICC profile is not applied, so print-profiled colours come out slightly off.
  Adobe's inverted CMYK JPEGs are undone by PIL's JPEG reader.
* 16-bit greyscale (``I;16``, ``I;16B``, ``I;16L``; and ``I``, which PIL uses for 16-bit PNG and
  TIFF data) is scaled v * 255 / 65535 with rounding; ``convert("RGB")`` would clip every
  value above 255 to white.
* Greyscale ``L`` and bilevel ``1`` are replicated to three channels; other modes (YCbCr,
  LAB, HSV, F) go through ``convert("RGB")``.
* Animated files (GIF, APNG, WebP) give their first frame.

Truncated files raise :class:`MediaError`: ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left at
False and every image is fully decoded with ``load()`` before it is returned.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from onevision.data.media.errors import MediaError, check_readable_file, describe_head

# Errors PIL raises for data it cannot decode (UnidentifiedImageError is an OSError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)

# EXIF orientations that rotate by 90 or 270 degrees (with or without a mirror).
_SWAPS_AXES = {5, 6, 7, 8}

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}

WHITE = (255, 255, 255)


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` fully into an upright 8-bit RGB PIL image.

    Raises:
        MediaError: the file is missing, empty, not an image PIL recognises, truncated,
            otherwise undecodable, or too big for the memory left (PIL refuses more than
            twice ``Image.MAX_IMAGE_PIXELS`` pixels before decoding); the message names the
            file and the cause.
    """
    path = check_readable_file(path)
    size = None
    try:
        with Image.open(path) as image:
            size = image.size
            image.seek(0)
            image.load()
            upright = ImageOps.exif_transpose(image)
        return to_rgb(upright)
    except UnidentifiedImageError:
        raise MediaError(
            path, f"not an image format PIL recognises (file starts with {describe_head(path)})"
        ) from None
    except _DECODE_ERRORS as error:
        raise MediaError(path, f"image cannot be decoded: {error}") from error
    except MemoryError:
        where = f" a {size[0]}x{size[1]} image" if size else ""
        raise MediaError(path, f"out of memory decoding{where}") from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the upright image, read from the file header without decoding pixels.

    A 90- or 270-degree EXIF orientation swaps the stored width and height, matching what
    :func:`load_image` returns. Only metadata before the pixel data is consulted (for PNG an
    eXIf chunk placed after the image data is not seen). A truncated file whose header is
    intact still reports its size here; :func:`load_image` is what detects the truncation.

    Raises:
        MediaError: the file is missing, empty or not an image PIL recognises.
    """
    path = check_readable_file(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            # The base-class getexif only reads what the header already parsed; PNG's own
            # override would decode the whole image to look for a trailing eXIf chunk.
            orientation = Image.Image.getexif(image).get(ExifTags.Base.Orientation, 1)
    except UnidentifiedImageError:
        raise MediaError(
            path, f"not an image format PIL recognises (file starts with {describe_head(path)})"
        ) from None
    except _DECODE_ERRORS as error:
        raise MediaError(path, f"image header cannot be read: {error}") from error
    if orientation in _SWAPS_AXES:
        return height, width
    return width, height


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded PIL image of any mode to 8-bit RGB by the rules in the module docstring."""
    if image.mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(image)
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "RGB":
        return image
    return image.convert("RGB")


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    """Scale 0..65535 greyscale to 0..255 with rounding and replicate it to RGB."""
    values = np.asarray(image).astype(np.int64)
    values = np.clip(values, 0, 65535)
    grey = ((values * 255 + 32767) // 65535).astype(np.uint8)
    return Image.fromarray(np.repeat(grey[..., None], 3, axis=-1))
