"""The `edge-daemon` command: `serve` runs the HTTP daemon; the rest manage models and try them offline."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from edge_daemon import __version__
from edge_daemon.config import Settings, add_arguments, load_settings
from edge_daemon.errors import ApiError
from edge_daemon.logging_setup import configure_logging

log = logging.getLogger("edge_daemon")


def serve(settings: Settings, drain_seconds: float = 10.0) -> int:
    """Run the HTTP daemon until SIGTERM/SIGINT, telling systemd how start-up goes when NOTIFY_SOCKET is set.

    The socket is bound before READY=1 (sent once `--preload` models settle). On a signal: STOPPING=1, the
    listening socket closes, requests already received finish (at most `drain_seconds`; a second signal
    cuts that short), then exit 0. See edge_daemon/systemd_notify.py for the watchdog.
    """
    import signal
    import threading
    import time

    from waitress import wasyncore
    from waitress.channel import HTTPChannel
    from waitress.server import BaseWSGIServer, create_server

    from edge_daemon import systemd_notify
    from edge_daemon.app import create_app
    from edge_daemon.heap import HeapKeeper
    from edge_daemon.models.store import ModelId

    heap = HeapKeeper(settings.malloc_arenas, settings.memory_trim_seconds).start()  # before any worker thread
    if settings.gil_switch_ms > 0:
        # Camera readers and engine callers come back from C (decoding, session.run) needing the GIL for a few
        # lines before their next C call; at Python's 5 ms a thread running Python kept them, and a core, waiting.
        # 1 ms: +4-16 % stream inferences at saturation on 2 cores (4 of 4 paired rounds), HTTP unchanged.
        sys.setswitchinterval(settings.gil_switch_ms / 1000)
    app = create_app(settings)
    preloading = []
    for model_id in settings.preload:
        try:
            app.service.manager.start_loading(ModelId.parse(model_id))  # in the background: serving starts now
            preloading.append(model_id)
        except ApiError as error:
            log.error("cannot preload %s: %s", model_id, error.message)
    probes = systemd_notify.QuietProbes()
    probes.install()
    socket_map: dict[int, wasyncore.dispatcher] = {}
    server = create_server(probes.wrap(app), map=socket_map, host=settings.host, port=settings.port,
                           threads=settings.threads, ident="edge-daemon",
                           max_request_body_size=settings.max_body_bytes + 1024 * 1024, recv_bytes=65536)
    listeners = [item for item in socket_map.values() if isinstance(item, BaseWSGIServer)]
    host, port = str(listeners[0].effective_host), int(listeners[0].effective_port)
    use_poll = server.adj.asyncore_use_poll

    stop, hurry = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        (hurry if stop.is_set() else stop).set()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    log.info("edge-daemon %s listening on %s:%d with %d threads", __version__, host, port, settings.threads)
    reporter = systemd_notify.StartupReporter(app.service.manager, preloading, f"serving on {host}:{port}").start()
    interval = systemd_notify.watchdog_seconds()
    watchdog = None
    if interval:
        probe = systemd_notify.HttpProbe(settings.host, port, token=probes.token)
        watchdog = systemd_notify.Watchdog(probe, interval).start()
    try:
        while not stop.is_set():  # waitress's own run() has no way out but an exception
            wasyncore.loop(timeout=0.5, use_poll=use_poll, map=socket_map, count=1)
    finally:
        reporter.stop()
        heap.stop()
        if watchdog:
            watchdog.stop()
        systemd_notify.stopping(f"stopping: finishing requests in flight (at most {drain_seconds:.0f} s)")
        log.info("stopping: no new connections; finishing requests in flight (at most %.0f s)", drain_seconds)
        for listener in listeners:
            wasyncore.dispatcher.close(listener)  # the listening socket only (its trigger still wakes the loop)
        app.close()  # camera streams stop (their SSE connections end; MQTT sinks publish "offline")
        deadline, busy = time.monotonic() + drain_seconds, 0
        while time.monotonic() < deadline and not hurry.is_set():
            busy = 0
            for channel in list(socket_map.values()):
                if not isinstance(channel, HTTPChannel):
                    continue
                if channel.requests or channel.request is not None or channel.total_outbufs_len:
                    busy += 1  # running, half received, or response not yet sent
                else:
                    channel.will_close = True  # an idle keep-alive connection: close it
            if not busy:
                break
            wasyncore.loop(timeout=0.05, use_poll=use_poll, map=socket_map, count=1)
        if busy:
            log.warning("%d request(s) still in flight at exit: closing them", busy)
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=1)
        wasyncore.close_all(socket_map)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if any(status.state not in ("ready", "failed") for status in app.service.manager.statuses().values()):
        # A model still loading in a background thread would abort inside ONNX Runtime while the interpreter
        # shuts down (C++ terminate, exit 134); nothing is left to save (downloads are staged, then renamed).
        log.info("stopped (a model load in progress was abandoned)")
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    log.info("stopped")
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

    probe = commands.add_parser("probe", help="what this box is and which backend it will use")
    probe.add_argument("--json", action="store_true")
    add_arguments(probe)

    cache = commands.add_parser("cache", help="list or prune compiled engines")
    cache_actions = cache.add_subparsers(dest="action", required=True)
    add_arguments(cache_actions.add_parser("ls", help="list compiled engines"))
    prune = cache_actions.add_parser("prune", help="remove engines no available model uses (or by age / all)")
    prune.add_argument("--older-than-days", type=float, default=None)
    prune.add_argument("--all", dest="remove_all", action="store_true")
    add_arguments(prune)

    models = commands.add_parser("models", help="list, pull, import, build or remove models")
    actions = models.add_subparsers(dest="action", required=True)
    add_arguments(actions.add_parser("list", help="models available without the network"))
    pull = actions.add_parser("pull", help="download a model from the registry into the cache")
    pull.add_argument("model_id")
    add_arguments(pull)
    imported = actions.add_parser("import", help="bring your own ONNX export (no registry needed)")
    imported.add_argument("onnx", type=Path, help="an ONNX file, or a folder holding a model in either of Roboflow's "
                                                  "metadata formats (environment.json or inference_config.json)")
    imported.add_argument("--task", help="for an ONNX file: object-detection, instance-segmentation, "
                                         "keypoint-detection, classification or semantic-segmentation")
    imported.add_argument("--classes", help="for an ONNX file: comma-separated class names in output order")
    imported.add_argument("--model-type", default="imported",
                          help="for an ONNX file: its architecture (yolov8n, yolo26n, rfdetr-nano, vit, ...); "
                               "otherwise the family is recognised from its outputs")
    imported.add_argument("--as", dest="target", required=True, help="model id to serve it as, e.g. mine/1")
    imported.add_argument("--size", default=None, help="network input WxH when the ONNX input is dynamic")
    imported.add_argument("--resize-format", default="Fit (grey edges) in",
                          help="'Stretch to' or 'Fit (black|white|grey edges) in' (letterbox)")
    imported.add_argument("--multilabel", action="store_true", help="multi-label classification")
    add_arguments(imported)
    prebuilt = actions.add_parser("build", help="compile a model's engine for this box now (downloads if needed)")
    prebuilt.add_argument("model_id")
    add_arguments(prebuilt)
    exported = actions.add_parser("export-triton", help="write the model as a Triton model repository entry")
    exported.add_argument("model_id")
    exported.add_argument("directory", type=Path, help="the model repository; the entry is DIR/<project>_<version>")
    exported.add_argument("--force", action="store_true", help="replace an existing entry")
    add_arguments(exported)
    removed = actions.add_parser("rm", help="remove a model from your store and the cache")
    removed.add_argument("model_id")
    add_arguments(removed)
    _streams_parser(commands)
    return parser


def _streams_parser(commands: argparse._SubParsersAction) -> None:
    """`edge-daemon streams ...` (camera streams; see edge_daemon/streams/commands.py)."""
    streams = commands.add_parser("streams", help="list, add or remove a running daemon's camera streams; test a camera")
    actions = streams.add_subparsers(dest="action", required=True)
    daemon = argparse.ArgumentParser(add_help=False)
    daemon.add_argument("--url", default=os.environ.get("EDGE_DAEMON_URL", "http://127.0.0.1:9001"),
                        help="the running daemon (env EDGE_DAEMON_URL)")
    daemon.add_argument("--key", default=os.environ.get("EDGE_DAEMON_KEY"), help="access key, if the daemon needs one")
    actions.add_parser("list", parents=[daemon], help="streams, their state and counters")
    add = actions.add_parser("add", parents=[daemon], help="add a stream (kept across daemon restarts)")
    add.add_argument("id")
    add.add_argument("source", help="rtsp(s)://, http(s):// MJPEG or snapshot URL, /dev/videoN or a video file")
    add.add_argument("--model", default="shapes/1")
    add.add_argument("--max-fps", type=float, default=2.0)
    add.add_argument("--confidence", type=float, default=0.4)
    add.add_argument("--snapshot-interval", type=float, default=None, help="poll the URL as a snapshot camera")
    add.add_argument("--mqtt", default=None, help="mqtt://host[:port] to publish to")
    add.add_argument("--webhook", default=None, help="http(s) URL to POST results to")
    remove = actions.add_parser("rm", parents=[daemon], help="stop and remove a stream")
    remove.add_argument("id")
    test = actions.add_parser("test", help="open a camera here, print resolution/fps/codec and one inference")
    test.add_argument("source")
    test.add_argument("--model", default="shapes/1")
    test.add_argument("--timeout", type=float, default=10.0, help="seconds allowed to open and read")
    add_arguments(test)


def _streams_command(args: argparse.Namespace, settings: Settings) -> int:
    from edge_daemon.streams import commands

    if args.action == "test":
        return commands.test_camera(settings, args.source, args.model, args.timeout)
    if args.action == "list":
        return commands.list_streams(args.url, args.key)
    if args.action == "rm":
        return commands.remove_stream(args.url, args.key, args.id)
    config: dict = {"id": args.id, "source": args.source, "model_id": args.model, "max_fps": args.max_fps,
                    "confidence": args.confidence, "sinks": []}
    if args.snapshot_interval:
        config.update(source_type="snapshot", snapshot_interval=args.snapshot_interval)
    if args.mqtt:
        config["sinks"].append({"type": "mqtt", "url": args.mqtt})
    if args.webhook:
        config["sinks"].append({"type": "webhook", "url": args.webhook})
    return commands.add_stream(args.url, args.key, config)


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
    from edge_daemon import engine_commands, model_commands

    if args.command == "streams":
        return _streams_command(args, settings)
    if args.command == "probe":
        return engine_commands.probe(settings, args.json)
    if args.command == "cache":
        if args.action == "ls":
            return engine_commands.cache_list(settings)
        return engine_commands.cache_prune(settings, args.older_than_days, args.remove_all)
    if args.command == "infer":
        return infer(settings, args.model_id, args.image, args.confidence, args.output)
    if args.action == "list":
        return model_commands.list_models(settings)
    if args.action == "pull":
        return model_commands.pull_model(settings, args.model_id, settings.api_key or None)
    if args.action == "import":
        if args.onnx.is_dir():
            return model_commands.import_folder(settings, args.onnx, args.target)
        if not args.task or not args.classes:
            raise ApiError("an ONNX file needs --task and --classes (a model folder carries them in its metadata)",
                           400)
        size = tuple(int(v) for v in args.size.lower().split("x")) if args.size else None
        classes = [name.strip() for name in args.classes.split(",") if name.strip()]
        return model_commands.import_model(settings, args.onnx, args.task, classes, args.target, size,  # type: ignore[arg-type]
                                           args.resize_format, args.multilabel, args.model_type)
    if args.action == "rm":
        return model_commands.remove_model(settings, args.model_id)
    if args.action == "export-triton":
        return model_commands.export_triton(settings, args.model_id, args.directory, args.force)
    if args.action == "build":
        return engine_commands.build(settings, args.model_id)
    return 2
