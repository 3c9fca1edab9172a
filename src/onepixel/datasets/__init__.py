"""Images and datasets: loading, ``mitosis``/``normal`` folders, tiles and slides, TUPAC16, the demo set."""

from onepixel.datasets.images import (
    IMAGE_SUFFIXES,
    Dataset,
    LabeledImage,
    expand_image_paths,
    load_image,
    load_images,
    scan_dataset,
    scan_image_folder,
)

__all__ = ["IMAGE_SUFFIXES", "Dataset", "LabeledImage", "expand_image_paths", "load_image",
           "load_images", "scan_dataset", "scan_image_folder"]
