"""facedemo: face detection (where) and face recognition (who) side by side, with an encrypted template vault.

    >>> import facedemo
    >>> faces = facedemo.detect_faces("group.jpg")                 # boxes, landmarks, scores
    >>> codes = facedemo.face_embeddings("group.jpg")               # N x 128
    >>> facedemo.compare_faces(codes, codes[0])                     # [True, False, ...]
    >>> people = facedemo.gallery_from_folder("people/")            # people/<name>/<photo>
    >>> [fa.decision.identity for fa in facedemo.analyse("group.jpg", people).faces]
"""
from facedemo.api import (
    analyse,
    compare_faces,
    detect_faces,
    face_distance,
    face_embeddings,
    gallery_from_embeddings,
    gallery_from_folder,
    load_image,
    set_image_limits,
)
from facedemo.images import ImageError
from facedemo.matching import Gallery
from facedemo.results import Analysis, Face

__all__ = [
    "Analysis",
    "Face",
    "Gallery",
    "ImageError",
    "analyse",
    "compare_faces",
    "detect_faces",
    "face_distance",
    "face_embeddings",
    "gallery_from_embeddings",
    "gallery_from_folder",
    "load_image",
    "set_image_limits",
]
