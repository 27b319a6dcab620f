"""cerberus-cli: multi-task Cerberus segmentation of H&E whole-slide images."""

__version__ = "0.1.0"
