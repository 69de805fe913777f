"""facedemo: face detection (where) and face recognition (who) side by side, with an encrypted template vault.

    >>> import facedemo
    >>> faces = facedemo.detect_faces("group.jpg")          # boxes, landmarks, scores
    >>> codes = facedemo.face_embeddings("group.jpg")        # N x 128
    >>> facedemo.face_distance(codes, codes[0])              # smaller = more alike
"""
from facedemo.api import analyse, detect_faces, face_distance, face_embeddings, load_image

__all__ = ["analyse", "detect_faces", "face_distance", "face_embeddings", "load_image"]
