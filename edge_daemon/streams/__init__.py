"""Camera streams: the daemon reads RTSP / MJPEG / snapshot / file / V4L2 cameras itself, runs the model on the
freshest frame at up to `max_fps`, and publishes results to sinks (MQTT, webhooks, SSE).

This package sits beside `edge_daemon.api` and uses `InferenceService`; the HTTP layer never reaches into it
except through `StreamManager`'s public methods.
"""
