"""Pictures in a request: data URLs, or files under a folder the server was told to read.

A picture comes in an ``image_url`` part, as OpenAI's API sends it. Three kinds of URL:

* ``data:image/png;base64,...`` -- the picture itself; always accepted (within the limits).
* ``file:///abs/path.png`` or ``file:relative/path.png`` -- only when the server was started
  with an image folder (``--image-root``), and only for a file inside it once every ``..`` and
  symbolic link is resolved: a client must not read the server's disk by naming a path.
* ``http(s)://...`` -- refused. Fetching would let any client make the server send requests
  to wherever it likes (its own network included), and the course runs offline.

Pictures are untrusted bytes: their size is checked before decoding (``max_image_bytes``),
their pixel count before the pixels are loaded (``max_image_pixels``: a small PNG can claim
to be a 100000 x 100000 canvas), and any decoding failure becomes a 400 naming the picture.
"""

import base64
import binascii
import io
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from PIL import Image

FORMATS = {"PNG", "JPEG", "MPO", "GIF", "WEBP", "BMP"}   # MPO: the JPEG of many cameras


@dataclass(frozen=True)
class ImageLimits:
    max_images: int = 4                  # pictures per request
    max_image_bytes: int = 5 * 2**20     # an encoded picture (a data URL's base64 is 4/3 of this)
    max_image_pixels: int = 2048 * 2048  # width x height, checked before decoding

    @property
    def max_body_bytes(self) -> int:
        """The largest request body worth reading: every picture at its limit, in base64, plus 1 MiB of text."""
        return self.max_images * (self.max_image_bytes * 4 // 3 + 1024) + 2**20


class ImageError(ValueError):
    """A picture refused; ``code`` is the OpenAI-style error code the server answers with."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


def load_image(url: str, limits: ImageLimits, image_root: Path | None = None) -> Image.Image:
    """An ``image_url``'s URL -> an RGB PIL image, or ImageError saying what is wrong and what to send."""
    scheme = url[:url.find(":")].lower() if ":" in url else ""
    if scheme == "data":
        return decode(_data_url_bytes(url, limits), limits)
    if scheme == "file":
        return decode(_file_bytes(url, limits, image_root), limits)
    if scheme in ("http", "https"):
        raise ImageError("remote pictures are not fetched (the server reaches no network on a client's "
                         "behalf): send the picture itself as a data URL, data:image/png;base64,...",
                         "unsupported_image_url")
    raise ImageError(f"unsupported image URL {url[:30]!r}...: send a data URL, data:image/png;base64,...",
                     "unsupported_image_url")


def _data_url_bytes(url: str, limits: ImageLimits) -> bytes:
    header, comma, payload = url[len("data:"):].partition(",")
    media_type, *params = header.split(";")
    if not comma or "base64" not in params or not media_type.lower().startswith("image/"):
        raise ImageError("a data URL must be data:image/<type>;base64,<the picture's bytes in base64>",
                         "invalid_image_url")
    if len(payload) > -(-limits.max_image_bytes // 3) * 4:   # checked before decoding anything
        raise ImageError(f"picture too large: over {limits.max_image_bytes} bytes (--max-image-bytes); "
                         "send a smaller one", "image_too_large")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("the data URL's base64 is malformed: encode the whole file with standard base64",
                         "invalid_image_url") from None


def _file_bytes(url: str, limits: ImageLimits, image_root: Path | None) -> bytes:
    if image_root is None:
        raise ImageError("this server reads no local files: send the picture as a data URL, or start the "
                         "server with --image-root DIR to allow file: URLs under DIR", "unsupported_image_url")
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ImageError(f"file URLs name a file on this machine; got host {parts.netloc!r}", "invalid_image_url")
    root = Path(image_root).resolve()
    path = (root / unquote(parts.path)).resolve()   # an absolute path replaces root; .. and links resolved
    if not path.is_relative_to(root):
        raise ImageError(f"file URLs must name a file inside the image folder {root}", "image_outside_root")
    if not path.is_file():
        raise ImageError(f"no image file at {path.relative_to(root)} in the image folder", "image_not_found")
    if path.stat().st_size > limits.max_image_bytes:
        raise ImageError(f"picture too large: over {limits.max_image_bytes} bytes (--max-image-bytes)",
                         "image_too_large")
    return path.read_bytes()


def decode(data: bytes, limits: ImageLimits) -> Image.Image:
    """Encoded bytes -> an RGB image (a GIF's first frame); size checked before the pixels are read."""
    try:
        with Image.open(io.BytesIO(data)) as image:   # reads the header only
            if image.format not in FORMATS:
                raise ImageError(f"{image.format} pictures are not taken: send {', '.join(sorted(FORMATS))}",
                                 "invalid_image_format")
            if image.width * image.height > limits.max_image_pixels:
                raise ImageError(f"picture too large: {image.width}x{image.height} pixels, over "
                                 f"{limits.max_image_pixels} (--max-image-pixels); send a smaller one",
                                 "image_too_large")
            return image.convert("RGB")
    except ImageError:
        raise
    # Decoders meet hostile bytes here and fail in many ways (OSError, SyntaxError, ValueError,
    # DecompressionBombError, struct.error, ...): each is the same answer, a picture we cannot read.
    except Exception as err:
        raise ImageError(f"not a picture that can be read ({type(err).__name__}: {str(err)[:80]}): send a PNG, "
                         "JPEG, GIF, WebP or BMP file", "invalid_image") from None
