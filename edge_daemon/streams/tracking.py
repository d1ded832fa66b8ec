"""A small IoU tracker and zone membership: stable `tracker_id`s and enter/exit events.

Written here rather than taken from a library: greedy IoU matching per class is ~60 lines, needs only numpy,
and suits the low frame rates streams run at (ByteTrack's extra low-score pass buys little at 2-5 fps).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

FRAME_ZONE = "frame"


def _box(prediction: dict[str, Any]) -> tuple[float, float, float, float]:
    x, y, w, h = prediction["x"], prediction["y"], prediction["width"], prediction["height"]
    return x - w / 2, y - h / 2, x + w / 2, y + h / 2


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    tracker_id: int
    class_name: str
    box: tuple[float, float, float, float]
    missed: int = 0
    zones: set[str] = field(default_factory=set)


class IouTracker:
    """Matches each frame's predictions to live tracks by IoU (same class, best first); unmatched ones start
    new tracks, and a track unseen for `max_missed` frames ends."""

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 3):
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.tracks: list[Track] = []
        self._ids = itertools.count(1)

    def update(self, predictions: list[dict[str, Any]]) -> tuple[list[Track], list[Track]]:
        """Stamp `tracker_id` on every prediction; returns (tracks that started, tracks that ended)."""
        pairs = []
        for pi, prediction in enumerate(predictions):
            box = _box(prediction)
            for ti, track in enumerate(self.tracks):
                if track.class_name == prediction["class"]:
                    overlap = iou(box, track.box)
                    if overlap >= self.iou_threshold:
                        pairs.append((overlap, pi, ti))
        pairs.sort(reverse=True)
        used_p: set[int] = set()
        used_t: set[int] = set()
        for _, pi, ti in pairs:
            if pi in used_p or ti in used_t:
                continue
            used_p.add(pi)
            used_t.add(ti)
            track = self.tracks[ti]
            track.box, track.missed = _box(predictions[pi]), 0
            predictions[pi]["tracker_id"] = track.tracker_id
        started = []
        for pi, prediction in enumerate(predictions):
            if pi not in used_p:
                track = Track(next(self._ids), prediction["class"], _box(prediction))
                self.tracks.append(track)
                started.append(track)
                prediction["tracker_id"] = track.tracker_id
        ended = []
        for ti, track in enumerate(self.tracks):
            if ti not in used_t and track not in started:
                track.missed += 1
                if track.missed > self.max_missed:
                    ended.append(track)
        self.tracks = [track for track in self.tracks if track not in ended]
        return started, ended


class Zones:
    """Named polygons (fractions of the frame) tested against object centres in pixels."""

    def __init__(self, zones: list[tuple[str, list[list[float]]]]):
        self._zones = [(name, np.asarray(points, np.float32)) for name, points in zones]

    def containing(self, x: float, y: float, width: int, height: int) -> set[str]:
        inside = set()
        for name, polygon in self._zones:
            scaled = polygon * np.asarray([width, height], np.float32)
            if cv2.pointPolygonTest(scaled.reshape(-1, 1, 2), (float(x), float(y)), False) >= 0:
                inside.add(name)
        return inside

    def counts(self, predictions: list[dict[str, Any]], width: int, height: int) -> dict[str, int]:
        totals = {name: 0 for name, _ in self._zones}
        for prediction in predictions:
            for name in self.containing(prediction["x"], prediction["y"], width, height):
                totals[name] += 1
        return totals


def zone_events(tracker: IouTracker, zones: Zones, predictions: list[dict[str, Any]], started: list[Track],
                ended: list[Track], width: int, height: int) -> list[dict[str, Any]]:
    """enter/exit events for the frame itself and for every zone, from the tracker's view of this frame."""
    events: list[dict[str, Any]] = []

    def event(kind: str, zone: str, track: Track) -> None:
        events.append({"event": kind, "zone": zone, "tracker_id": track.tracker_id, "class": track.class_name})

    for track in started:
        event("enter", FRAME_ZONE, track)
    by_id = {track.tracker_id: track for track in tracker.tracks}
    for prediction in predictions:
        track = by_id.get(prediction.get("tracker_id", -1))
        if track is None:
            continue
        now = zones.containing(prediction["x"], prediction["y"], width, height)
        for name in sorted(now - track.zones):
            event("enter", name, track)
        for name in sorted(track.zones - now):
            event("exit", name, track)
        track.zones = now
    for track in ended:
        for name in sorted(track.zones):
            event("exit", name, track)
        event("exit", FRAME_ZONE, track)
    return events
