"""The `edge-daemon` command: `serve` runs the HTTP daemon; `demo-image` writes a generated test scene."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from edge_daemon import __version__
from edge_daemon.config import Settings, add_arguments, load_settings

log = logging.getLogger("edge_daemon")


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def serve(settings: Settings) -> int:
    import waitress

    from edge_daemon.app import create_app
    from edge_daemon.errors import ApiError
    from edge_daemon.models.store import ModelId

    app = create_app(settings)
    service = app.service
    for model_id in settings.preload:
        try:
            service.manager.get(ModelId.parse(model_id))
            log.info("preloaded %s", model_id)
        except ApiError as error:
            log.error("could not preload %s: %s", model_id, error.message)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-daemon", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edge-daemon {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the HTTP inference server")
    add_arguments(serve_parser)
    demo = commands.add_parser("demo-image", help="write a generated scene of shapes as a JPEG")
    demo.add_argument("path", type=Path)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--width", type=int, default=None)
    demo.add_argument("--height", type=int, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        settings = load_settings(vars(args))
        configure_logging(settings.log_level)
        return serve(settings)
    if args.command == "demo-image":
        return demo_image(args.path, args.seed, args.width, args.height)
    return 2
