"""The MAX-compatible HTTP model service (``onepixel serve``); FastAPI and uvicorn load on demand."""

from onepixel.serving.server import create_app, decode_image, model_metadata, parse_multipart, serve

__all__ = ["create_app", "decode_image", "model_metadata", "parse_multipart", "serve"]
