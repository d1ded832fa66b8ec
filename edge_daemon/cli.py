"""The `edge-daemon` command: `serve` runs the HTTP daemon; the rest manage models and try them offline."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from edge_daemon import __version__
from edge_daemon.config import Settings, add_arguments, load_settings
from edge_daemon.errors import ApiError
from edge_daemon.logging_setup import configure_logging

log = logging.getLogger("edge_daemon")


def serve(settings: Settings) -> int:
    import waitress

    from edge_daemon.app import create_app
    from edge_daemon.models.store import ModelId

    app = create_app(settings)
    for model_id in settings.preload:
        try:
            app.service.manager.start_loading(ModelId.parse(model_id))  # in the background: serving starts now
        except ApiError as error:
            log.error("cannot preload %s: %s", model_id, error.message)
    log.info("edge-daemon %s listening on %s:%d with %d threads", __version__, settings.host, settings.port,
             settings.threads)
    waitress.serve(app, host=settings.host, port=settings.port, threads=settings.threads,
                   ident="edge-daemon", max_request_body_size=settings.max_body_bytes + 1024 * 1024,
                   _quiet=True)
    return 0


def demo_image(path: Path, seed: int, width: int | None, height: int | None) -> int:
    from edge_daemon.scenes import encode_jpeg, generate_scene

    scene = generate_scene(seed, width, height)
    path.write_bytes(encode_jpeg(scene.image, 92))
    names = ", ".join(obj.class_name for obj in scene.objects)
    print(f"wrote {path} ({scene.image.shape[1]}x{scene.image.shape[0]}): {names}")
    return 0


def infer(settings: Settings, model_id: str, image: Path, confidence: float, output: Path | None) -> int:
    """Run one image through a model in-process; print the JSON, or write the annotated picture."""
    from edge_daemon.images.decode import ImageSource
    from edge_daemon.inference import InferenceParams
    from edge_daemon.models.store import ModelId
    from edge_daemon.processing.detection import DetectionParams
    from edge_daemon.service import InferenceService, Visualisation

    service = InferenceService(settings)
    draw = Visualisation("image", labels=True, stroke=2) if output else None
    result = service.infer(ModelId.parse(model_id), [ImageSource("bytes", image.read_bytes())],
                           InferenceParams(detection=DetectionParams(confidence=confidence)), draw=draw)
    if output:
        output.write_bytes(result.pictures[0])
        print(f"wrote {output}", file=sys.stderr)
    print(json.dumps(result.responses[0], indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-daemon", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edge-daemon {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    add_arguments(commands.add_parser("serve", help="run the HTTP inference server",
                                      description="Run the HTTP inference server. Every option is also an "
                                                  "environment variable; flags win."))

    demo = commands.add_parser("demo-image", help="write a generated scene of shapes as a JPEG")
    demo.add_argument("path", type=Path)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--width", type=int, default=None)
    demo.add_argument("--height", type=int, default=None)

    run = commands.add_parser("infer", help="run one image through a model and print the JSON")
    run.add_argument("model_id")
    run.add_argument("image", type=Path)
    run.add_argument("--confidence", type=float, default=0.4)
    run.add_argument("--output", type=Path, default=None, help="also write the picture with predictions drawn")
    add_arguments(run)

    models = commands.add_parser("models", help="list, pull, import or remove models")
    actions = models.add_subparsers(dest="action", required=True)
    add_arguments(actions.add_parser("list", help="models available without the network"))
    pull = actions.add_parser("pull", help="download a model from the registry into the cache")
    pull.add_argument("model_id")
    add_arguments(pull)
    imported = actions.add_parser("import", help="bring your own ONNX export (no registry needed)")
    imported.add_argument("onnx", type=Path)
    imported.add_argument("--task", required=True, help="object-detection, instance-segmentation or classification")
    imported.add_argument("--classes", required=True, help="comma-separated class names in output order")
    imported.add_argument("--as", dest="target", required=True, help="model id to serve it as, e.g. mine/1")
    imported.add_argument("--size", default=None, help="network input WxH when the ONNX input is dynamic")
    imported.add_argument("--resize-format", default="Fit (grey edges) in",
                          help="'Stretch to' or 'Fit (black|white|grey edges) in' (letterbox)")
    imported.add_argument("--multilabel", action="store_true", help="multi-label classification")
    add_arguments(imported)
    removed = actions.add_parser("rm", help="remove a model from your store and the cache")
    removed.add_argument("model_id")
    add_arguments(removed)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo-image":
        return demo_image(args.path, args.seed, args.width, args.height)
    settings = load_settings(vars(args))
    configure_logging(settings.log_level if args.command == "serve" else "warning", settings.log_format)
    if args.command == "serve":
        return serve(settings)
    try:
        return _run_tool(args, settings)
    except ApiError as error:
        print(f"edge-daemon: {error.message}", file=sys.stderr)
        return 1


def _run_tool(args: argparse.Namespace, settings: Settings) -> int:
    from edge_daemon import model_commands

    if args.command == "infer":
        return infer(settings, args.model_id, args.image, args.confidence, args.output)
    if args.action == "list":
        return model_commands.list_models(settings)
    if args.action == "pull":
        return model_commands.pull_model(settings, args.model_id, settings.api_key or None)
    if args.action == "import":
        size = tuple(int(v) for v in args.size.lower().split("x")) if args.size else None
        classes = [name.strip() for name in args.classes.split(",") if name.strip()]
        return model_commands.import_model(settings, args.onnx, args.task, classes, args.target, size,  # type: ignore[arg-type]
                                           args.resize_format, args.multilabel)
    if args.action == "rm":
        return model_commands.remove_model(settings, args.model_id)
    return 2
