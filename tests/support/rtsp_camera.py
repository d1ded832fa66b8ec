"""A test RTSP camera: GStreamer's RTSP server serving a still picture as a live H.264 stream at /live.

Runs under Debian's system python3 (python3-gi lives there, not in the venv):
    /usr/bin/python3 rtsp_camera.py PORT PICTURE.png FPS
Prints "ready" once listening. Only standard library and gi imports here.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer

port, picture, fps = sys.argv[1], sys.argv[2], int(sys.argv[3])
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f"( filesrc location={picture} ! pngdec ! imagefreeze is-live=true ! videoconvert "
    f"! video/x-raw,format=I420,framerate={fps}/1 "
    f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} bitrate=1000 "
    f"! rtph264pay name=pay0 pt=96 config-interval=1 )")
factory.set_shared(True)
server.get_mount_points().add_factory("/live", factory)
if server.attach(None) == 0:
    sys.exit("could not listen")
print("ready", flush=True)
GLib.MainLoop().run()
