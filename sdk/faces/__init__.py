"""Faces on device: detection + alignment, embedding, verification, galleries."""

from .detector import (ALIGNED_SIZE, ARCFACE_TEMPLATE, Face, FaceDetector, FaceDetectorOptions,
                       align_face, check_image)

__all__ = ["ALIGNED_SIZE", "ARCFACE_TEMPLATE", "Face", "FaceDetector", "FaceDetectorOptions",
           "align_face", "check_image"]
