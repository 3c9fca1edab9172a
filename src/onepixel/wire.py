"""The MAX wire format, shared by the server (:mod:`onepixel.serving`) and the HTTP client
(:mod:`onepixel.models.http_backend`): endpoint paths, the API key's names, lossless PNG
encoding, checked image decoding and the multipart/form-data parser.

One module so that both ends agree by construction: the client encodes with
:func:`encode_png` what the server decodes with :func:`decode_image` (its fast path reads
exactly those PNGs), and neither hand-builds PNG bytes anywhere else.

numpy, Pillow and python-multipart load on first use, so importing this module for its
constants (as the server's option parser does) costs nothing.
"""

from __future__ import annotations

import io
import ipaddress
import struct
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from onepixel.errors import ImageError, ModelError, RequestError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

#: The MAX endpoints (IBM's containers offer the first and the last; ``onepixel serve`` all three).
PREDICT = "/model/predict"
PREDICT_BATCH = "/model/predict_batch"
METADATA = "/model/metadata"
#: The multipart field that carries images, once per image.
IMAGE_FIELD = "image"
#: Environment variable holding the API key (server and client read the same one).
API_KEY_ENV = "ONEPIXEL_API_KEY"
#: Request header carrying the key (the server also accepts ``Authorization: Bearer KEY``).
API_KEY_HEADER = "x-api-key"
#: Image formats the server decodes; anything else is refused before a decoder runs.
IMAGE_FORMATS = ("PNG", "BMP", "TIFF", "JPEG")
#: Parts a request may carry besides its images (text fields, other files): a few, so that a
#: body of a million empty parts is refused after reading a handful, not parsed in full.
EXTRA_PARTS = 8
#: Header lines one part may carry (Content-Disposition and Content-Type are what clients send);
#: recent python-multipart (0.0.34 here) enforces the same number itself; older ones may not.
MAX_PART_HEADERS = 8

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IHDR = struct.Struct(">IIBBBBB")


def is_loopback(host: str | None) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``, ``[::1]``)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# -- PNG --------------------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def encode_png(image: np.ndarray, level: int = 0) -> bytes:
    """Encode a uint8 RGB image (H, W, 3) as a PNG, losslessly.

    8-bit truecolour, no interlace, filter 0 on every row, zlib ``level`` (0 = stored: about
    10 µs for 64x64 and 12 KiB; 1-9 smaller and slower). Any PNG decoder reads back the exact
    array, and :func:`decode_image` reads it without Pillow.

    Raises
    ------
    ModelError
        ``image`` is not uint8 (H, W, 3).
    """
    import numpy as np

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ModelError(f"encode_png needs uint8 (H, W, 3), got {image.dtype} {image.shape}")
    h, w, _ = image.shape
    raw = np.empty((h, 1 + 3 * w), dtype=np.uint8)
    raw[:, 0] = 0
    raw[:, 1:] = image.reshape(h, 3 * w)
    header = _PNG_IHDR.pack(w, h, 8, 2, 0, 0, 0)
    return (_PNG_SIGNATURE + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw.tobytes(), level)) + _chunk(b"IEND", b""))


def _decode_plain_png(data: bytes, h: int, w: int) -> np.ndarray | None:
    """The fast path for the PNGs :func:`encode_png` writes.

    8-bit RGB, not interlaced, of size ``w`` x ``h``, every row with filter 0: the pixels are
    the inflated bytes. Every chunk's CRC, the zlib stream (checksum included) and its exact
    length are checked. Anything else returns None, and Pillow decodes it (or says what is wrong).
    """
    if not data.startswith(_PNG_SIGNATURE):
        return None
    idat: list[bytes] = []
    pos, n, seen_header = 8, len(data), False
    while True:
        if pos + 12 > n:
            return None  # no IEND
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > n:
            return None
        body = data[pos + 8 : end - 4]
        if zlib.crc32(body, zlib.crc32(kind)) != int.from_bytes(data[end - 4 : end], "big"):
            return None
        if not seen_header:
            if kind != b"IHDR" or length != 13 or _PNG_IHDR.unpack(body) != (w, h, 8, 2, 0, 0, 0):
                return None
            seen_header = True
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        elif not kind[0] & 0x20 and kind != b"PLTE":  # an unknown critical chunk
            return None
        pos = end
    expected = h * (1 + 3 * w)
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(b"".join(idat), expected + 1)  # never more than needed
    except zlib.error:
        return None
    if len(raw) != expected or not inflater.eof or inflater.unconsumed_tail:
        return None
    import numpy as np

    rows = np.frombuffer(raw, dtype=np.uint8).reshape(h, 1 + 3 * w)
    if rows[:, 0].any():
        return None  # other row filters: Pillow undoes them
    return rows[:, 1:].reshape(h, w, 3).copy()


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """(W, H) from the header of an image Pillow refused to open as a decompression bomb.

    ``Image.open`` refuses sizes over twice ``Image.MAX_IMAGE_PIXELS`` before saying the size;
    the format's own header reader (what ``Image.open`` runs first) has no such check.
    """
    from PIL import Image

    for fmt in IMAGE_FORMATS:
        factory, accept = Image.OPEN[fmt]
        if accept is not None and not accept(data[:16]):
            continue
        try:
            with factory(io.BytesIO(data), None) as img:
                return img.size
        except Exception:  # another format's header (or none): try the next format
            continue
    return None


def decode_image(data: bytes, input_shape: Sequence[int], source: str = "image") -> np.ndarray:
    """Decode an uploaded image into uint8 RGB of the model's input size.

    The size is checked from the header before any pixel is decoded (so a small file that
    claims a huge image costs nothing, and is told its size). Greyscale, palette and RGBA
    become RGB, as in :func:`onepixel.datasets.images.load_image`.

    Parameters
    ----------
    data : bytes
        The file's content (PNG, JPEG, TIFF or BMP).
    input_shape : (H, W) or (H, W, 3)
    source : str
        Names the image in error messages.

    Returns
    -------
    ndarray, shape (H, W, 3), uint8

    Raises
    ------
    ImageError
        Empty, not an image, corrupt or truncated, or of another size; the message says which.
    """
    h, w = int(input_shape[0]), int(input_shape[1])
    if not data:
        raise ImageError(f"{source}: the file is empty; send a {w}x{h} PNG image")
    fast = _decode_plain_png(data, h, w)
    if fast is not None:
        return fast
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from onepixel.datasets.images import to_rgb

    def wrong_size(size: tuple[int, int]) -> ImageError:
        return ImageError(f"{source}: image is {size[0]}x{size[1]} (WxH) but the model takes "
                          f"{w}x{h}; crop or tile it first (images are never resized)")

    try:
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        raise ImageError(f"{source}: not an image ({len(data)} bytes that are not PNG, JPEG, TIFF "
                         f"or BMP); send a {w}x{h} PNG image") from None
    except Image.DecompressionBombError:
        size = _declared_size(data)
        if size is not None:
            raise wrong_size(size) from None
        raise ImageError(f"{source}: the header claims a huge image; send a {w}x{h} PNG "
                         "image") from None
    except Exception as exc:  # Pillow raises many types for broken headers
        raise ImageError(f"{source}: corrupt image header ({exc}); send a {w}x{h} PNG image") from None
    with img:
        if img.size != (w, h):
            raise wrong_size(img.size)
        try:
            img.load()
            if img.mode != "RGB":
                img = to_rgb(img)
            array = np.asarray(img, dtype=np.uint8)
        except Exception as exc:  # truncated data, bad CRC, decoder errors
            raise ImageError(f"{source}: corrupt or truncated {img.format} image ({exc})") from None
    if array.shape != (h, w, 3):
        raise ImageError(f"{source}: decoded to shape {array.shape}, expected ({h}, {w}, 3)")
    return array


# -- multipart/form-data ----------------------------------------------------------------------

class _PartCollector:
    """python-multipart callbacks that keep the file parts named ``field``, in order.

    Counting happens as parts begin, so a body of many parts is refused after ``max_parts``
    of them, before the rest is parsed.
    """

    def __init__(self, field: str, max_files: int, max_parts: int, too_many_files: str):
        self.field = field.encode()
        self.max_files = max_files
        self.max_parts = max_parts
        self.too_many_files = too_many_files
        self.parts: list[tuple[str, bytes]] = []
        self.n_parts = 0
        self.ended = False
        self._header = self._value = self._disposition = b""
        self._n_headers = 0
        self._chunks: list[bytes] = []

    def callbacks(self) -> dict:
        return {"on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_end": self.on_end}

    def on_part_begin(self) -> None:
        self.n_parts += 1
        if self.n_parts > self.max_parts:
            raise RequestError(400, f"more than {self.max_parts} parts in one multipart body (at "
                                    f"most {self.max_files} {self.field.decode()!r} file(s) and "
                                    f"{EXTRA_PARTS} other fields); send fewer")
        self._chunks = []
        self._disposition = b""
        self._n_headers = 0

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._n_headers += 1
        if self._n_headers > MAX_PART_HEADERS:
            raise RequestError(400, f"a multipart part has more than {MAX_PART_HEADERS} header "
                                    "lines; send Content-Disposition and Content-Type only")
        if self._header.lower() == b"content-disposition":
            self._disposition = self._value
        self._header = self._value = b""

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._chunks.append(data[start:end])

    def on_part_end(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._disposition)
        if options.get(b"name") != self.field:
            return
        name = self.field.decode()
        if b"filename" not in options:
            raise RequestError(400, f"field {name!r} is a text field; send the image as a file "
                                    f"(curl -F {name}=@patch.png URL)")
        if len(self.parts) >= self.max_files:
            raise RequestError(400, self.too_many_files)
        filename = options[b"filename"].decode("utf-8", "replace")
        self.parts.append((filename, b"".join(self._chunks)))

    def on_end(self) -> None:
        self.ended = True


def parse_multipart(body: bytes, content_type: str, field: str = IMAGE_FIELD,
                    max_files: int = 1) -> list[tuple[str, bytes]]:
    """The file parts named ``field`` of a multipart/form-data body, as (filename, content).

    In the order sent; at most ``max_files`` (1, the MAX API's one image, unless the caller,
    as the batch endpoint, allows more). Parts with other names are ignored, up to
    :data:`EXTRA_PARTS` of them; a part named ``field`` must be a file (have a filename, as
    ``curl -F image=@file`` and every HTTP library's file upload send), not a text field.

    Raises
    ------
    RequestError
        400: not multipart, no boundary, malformed or incomplete, a text field named ``field``,
        more than ``max_files`` files named ``field``, more than ``max_files + EXTRA_PARTS``
        parts, a part with more than :data:`MAX_PART_HEADERS` headers, or no file at all.
    """
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    mime, params = parse_options_header(content_type)
    example = f"curl -F {field}=@patch.png URL"
    if mime != b"multipart/form-data":
        raise RequestError(400, f"expected a multipart/form-data body with a file field {field!r} "
                                f"(got content type {content_type or 'none'!r}); e.g. {example}")
    boundary = params.get(b"boundary")
    if not boundary:
        raise RequestError(400, "the multipart/form-data Content-Type has no boundary")
    too_many = (f"{max_files} image(s) at most per request here" +
                (f"; send several to {PREDICT_BATCH}" if max_files == 1 else
                 "; split the batch (the server's --max-batch)"))
    collector = _PartCollector(field, max_files, max_files + EXTRA_PARTS, too_many)
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise RequestError(400, f"malformed multipart body: {exc}") from None
    if not collector.ended:
        raise RequestError(400, "incomplete multipart body (no closing boundary); send the whole body")
    if not collector.parts:
        raise RequestError(400, f"missing file field {field!r}: send the image as multipart/form-data "
                                f"field {field!r} ({example})")
    return collector.parts
