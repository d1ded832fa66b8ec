"""`edge-daemon models list|pull|import|rm|export-triton` and `edge-daemon infer`: manage and try models offline.

`import` lets a user bring their own ONNX export with no registry at all: it is validated by loading it
exactly as the daemon would, then installed atomically into the user's model store.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from edge_daemon import families
from edge_daemon.config import Settings
from edge_daemon.errors import ApiError
from edge_daemon.hashing import sha256_file
from edge_daemon.inference import LoadedModel
from edge_daemon.models.manager import ModelManager
from edge_daemon.models.metadata import normalise_task, read_metadata
from edge_daemon.models.store import MANIFEST, ModelId, ModelStore
from edge_daemon.progress import ProgressReporter

RESIZE_FORMATS = ("Stretch to", "Fit (black edges) in", "Fit (white edges) in", "Fit (grey edges) in")


def list_models(settings: Settings) -> int:
    manager = ModelManager(settings)
    sources = [("user", store) for store in manager.local_stores[:-1]] + [("bundled", manager.local_stores[-1]),
                                                                          ("cache", manager.cache)]
    print(f"{'MODEL':28} {'TASK':24} {'FAMILY':14} {'SOURCE':8} {'SIZE':>10}  PATH")
    for label, store in sources:
        for model_id in store.list_ids():
            folder = store.folder(ModelId.parse(model_id))
            try:
                metadata = read_metadata(folder, model_id)
                task = metadata.task
                # The declared family; a model of another or no declared type is matched by its outputs at load.
                family = families.declared_family(metadata.task, metadata.model_type) or "(by outputs)"
            except ApiError as error:
                task, family = f"broken: {error.message[:40]}", "-"
            size = sum(path.stat().st_size for path in folder.iterdir() if path.is_file())
            print(f"{model_id:28} {task:24} {family:14} {label:8} {size / 1e6:9.1f}M  {folder}")
    return 0


def pull_model(settings: Settings, model_id: str, api_key: str | None) -> int:
    manager = ModelManager(settings)
    parsed = ModelId.parse(model_id)
    if manager.cache.has(parsed):
        print(f"{model_id} is already cached at {manager.cache.folder(parsed)}")
        return 0
    progress = ProgressReporter(f"downloading {model_id}")
    folder = manager.download(parsed, api_key or settings.api_key or None, progress)
    progress.finish("downloaded")
    LoadedModel(model_id, folder)  # validate it loads, as the daemon will
    print(f"{model_id} cached at {folder}")
    return 0


def _target_store(settings: Settings, parsed: ModelId) -> ModelStore:
    if not settings.models_dir:
        raise ApiError("no model store configured: pass --models-dir", 400)
    store = ModelStore(Path(settings.models_dir))
    if store.has(parsed):
        raise ApiError(f"{parsed} already exists in {store.root}; remove it first", 409)
    return store


def _install_checked(store: ModelStore, staged: Path, parsed: ModelId) -> int:
    """Load the staged folder exactly as the daemon would (which refuses metadata or outputs it cannot serve),
    then install it atomically; the staging folder goes either way."""
    try:
        loaded = LoadedModel(str(parsed), staged)
        folder = store.install(staged, parsed)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    loaded.retire()
    print(f"imported {parsed} ({loaded.task}, {loaded.family.name}, {loaded.metadata.format} metadata, "
          f"{len(loaded.class_names)} classes, input {loaded.input_width}x{loaded.input_height}) into {folder}")
    return 0


def import_folder(settings: Settings, source: Path, model_id: str) -> int:
    """Install a model folder in either of Roboflow's metadata formats (classic environment.json +
    model_type.json, or the package's inference_config.json + model_config.json + class_names.txt), after
    loading it exactly as the daemon would."""
    parsed = ModelId.parse(model_id)
    store = _target_store(settings, parsed)
    staged = store.staging_folder()
    try:
        for path in sorted(source.iterdir()):
            if path.is_file() and path.name != MANIFEST:
                shutil.copyfile(path, staged / path.name)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return _install_checked(store, staged, parsed)


def import_model(settings: Settings, onnx_path: Path, task: str, classes: list[str], model_id: str,
                 resize: tuple[int, int] | None, resize_format: str, multiclass: bool,
                 model_type: str = "imported") -> int:
    parsed = ModelId.parse(model_id)
    store = _target_store(settings, parsed)
    preprocessing: dict[str, object] = {"auto-orient": {"enabled": True}}
    if resize:
        preprocessing["resize"] = {"enabled": True, "width": resize[0], "height": resize[1], "format": resize_format}
    else:
        preprocessing["resize"] = {"enabled": True, "format": resize_format}
    environment = {"CLASS_MAP": {str(index): name for index, name in enumerate(classes)},
                   "PREPROCESSING": preprocessing, "MULTICLASS": multiclass}
    staged = store.staging_folder()
    try:
        shutil.copyfile(onnx_path, staged / "weights.onnx")
        (staged / "environment.json").write_text(json.dumps(environment, indent=2) + "\n", encoding="utf-8")
        (staged / "model_type.json").write_text(json.dumps({"project_task_type": normalise_task(task),
                                                            "model_type": model_type, "model_id": model_id,
                                                            "source_sha256": sha256_file(onnx_path)}) + "\n",
                                                encoding="utf-8")
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return _install_checked(store, staged, parsed)


def remove_model(settings: Settings, model_id: str) -> int:
    parsed = ModelId.parse(model_id)
    manager = ModelManager(settings)
    removed = False
    for store in [*manager.local_stores[:-1], manager.cache]:
        if store.has(parsed):
            store.remove(parsed)
            print(f"removed {model_id} from {store.root}")
            removed = True
    if not removed:
        print(f"{model_id} is not in the user store or the cache (bundled models cannot be removed)",
              file=sys.stderr)
        return 1
    return 0


def export_triton(settings: Settings, model_id: str, directory: Path, replace: bool) -> int:
    """Write the model as a Triton repository entry, named as the remote engine will ask for it."""
    from edge_daemon.engines.onnxruntime_engine import OnnxRuntimeEngine
    from edge_daemon.engines.remote_engine import parse_model_map, server_model_name
    from edge_daemon.engines.triton_repository import config_pbtxt, write_entry
    from edge_daemon.models.store import WEIGHTS

    parsed = ModelId.parse(model_id)
    manager = ModelManager(settings)
    stores = [*manager.local_stores, manager.cache]
    folder = next((store.folder(parsed) for store in stores if store.has(parsed)), None)
    if folder is None:
        folder = manager.download(parsed, settings.api_key or None)
    try:
        name = server_model_name(model_id, parse_model_map(settings.remote_model_map))
    except ValueError as error:
        raise ApiError(str(error), 400) from None
    engine = OnnxRuntimeEngine(folder / WEIGHTS, intra_op_threads=1, optimization="none")
    config = config_pbtxt(name, engine.inputs, engine.outputs, max(1, settings.max_batch),
                          int(settings.batch_window_ms * 1000))
    entry = write_entry(directory, name, folder / WEIGHTS, config, replace)
    print(f"wrote {entry}/config.pbtxt and {entry}/1/model.onnx (serve with: tritonserver --model-repository "
          f"{directory}; then edge-daemon serve --backend remote --remote-url grpc://HOST:8001)")
    return 0
