"""The on-disk model store: one folder per model id, verified by a sha256 manifest, installed atomically.

Layout (the same for the bundled models, a user's `--models-dir` and the download cache):

    <root>/<project>/<version>/weights.onnx      (or best.onnx, yolov5s_weights.onnx: Roboflow's cache names)
                              /environment.json + model_type.json         Roboflow's classic metadata, or
                              /inference_config.json + model_config.json  its package format (metadata.py)
                              /class_names.txt   (optional)
                              /keypoints_metadata.json (keypoint models)
                              /manifest.json     {"model_id": ..., "files": {name: sha256}}

A folder appears in the cache only by `os.rename` of a complete, verified temporary folder, so a crash or
power cut leaves either the whole model or nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edge_daemon.errors import BadRequest, ModelArtifactError
from edge_daemon.hashing import sha256_file
from edge_daemon.models.metadata import ENVIRONMENT, INFERENCE_CONFIG, MODEL_CONFIG, MODEL_TYPE, WEIGHTS_NAMES

WEIGHTS = "weights.onnx"  # the name downloads and imports are written under
MANIFEST = "manifest.json"
# Each model needs one file of each group: weights, preprocessing metadata, task and architecture.
REQUIRED_FILES = (WEIGHTS_NAMES, (ENVIRONMENT, INFERENCE_CONFIG), (MODEL_TYPE, MODEL_CONFIG))
BUNDLED_ROOT = Path(__file__).resolve().parent.parent / "default_models"

_ID_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class ModelId:
    project: str
    version: str

    @classmethod
    def parse(cls, text: str) -> ModelId:
        project, sep, version = (text or "").partition("/")
        if not sep:
            raise BadRequest(f"model id must look like 'project/version', got {text[:120]!r}")
        return cls.of(project, version)

    @classmethod
    def of(cls, project: str, version: str) -> ModelId:
        """Validate both parts before they touch a path or a URL: no '..', slashes, control characters."""
        for label, part in (("project id", project), ("model version", version)):
            if not _ID_PART.match(part or "") or ".." in part:
                raise BadRequest(f"invalid {label} {str(part)[:120]!r}: use letters, digits, '-', '_' and '.'")
        return cls(project, version)

    def __str__(self) -> str:
        return f"{self.project}/{self.version}"


def write_manifest(folder: Path, model_id: ModelId) -> None:
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    manifest = {"model_id": str(model_id), "files": {name: sha256_file(folder / name) for name in files}}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def verify_folder(folder: Path) -> None:
    """Check required files exist and match the manifest; raise ModelArtifactError naming what is wrong."""
    for names in REQUIRED_FILES:
        if not any((folder / name).is_file() for name in names):
            raise ModelArtifactError(f"model files incomplete: {' or '.join(names)} is missing")
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return  # a user's hand-made folder may have no manifest; nothing to check against
    try:
        expected = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelArtifactError("manifest.json is unreadable") from None
    for name, digest in expected.items():
        path = folder / name
        if "/" in name or not path.is_file():
            raise ModelArtifactError(f"model file {name} listed in the manifest is missing")
        if sha256_file(path) != digest:
            raise ModelArtifactError(f"model file {name} does not match its sha256 in the manifest")


class ModelStore:
    """A root folder of model folders."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def folder(self, model_id: ModelId) -> Path:
        return self.root / model_id.project / model_id.version

    def has(self, model_id: ModelId) -> bool:
        folder = self.folder(model_id)
        return any((folder / name).is_file() for name in WEIGHTS_NAMES)

    def list_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        found = {f"{weights.parent.parent.name}/{weights.parent.name}"
                 for name in WEIGHTS_NAMES for weights in self.root.glob(f"*/*/{name}")}
        return sorted(found)

    def staging_folder(self) -> Path:
        """A fresh temporary folder on the store's filesystem, so the final rename is atomic. Its name
        starts with this process id, so leftovers of a killed process can be recognised and removed."""
        staging_root = self.root / ".staging"
        staging_root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=staging_root, prefix=f"{os.getpid()}-"))

    def clean_staging(self) -> int:
        """Remove staging folders left by processes that no longer exist (a crash or kill -9 mid-download)."""
        staging_root = self.root / ".staging"
        removed = 0
        if not staging_root.is_dir():
            return 0
        for folder in staging_root.iterdir():
            owner = folder.name.split("-", 1)[0]
            if owner.isdigit() and int(owner) != os.getpid() and not _process_alive(int(owner)):
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed

    def install(self, staged: Path, model_id: ModelId) -> Path:
        """Move a complete staged folder into place (fsync'd first); if another process won, keep theirs."""
        write_manifest(staged, model_id)
        for path in staged.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        final = self.folder(model_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staged, final)
        except OSError:
            if not self.has(model_id):
                raise
            shutil.rmtree(staged, ignore_errors=True)
        _fsync_dir(final.parent)
        return final

    def remove(self, model_id: ModelId) -> None:
        """Delete a model folder atomically: rename it aside first, then delete at leisure."""
        final = self.folder(model_id)
        if not final.exists():
            return
        doomed = self.staging_folder()
        os.rename(final, doomed / "removed")
        shutil.rmtree(doomed, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
