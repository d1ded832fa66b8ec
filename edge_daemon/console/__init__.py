"""The web console at `/`: static HTML, CSS and JavaScript shipped in the package, no build step, nothing
fetched from the internet. The page only talks to the daemon's own API (see `site.py` for how it is served)."""

from edge_daemon.console.site import ConsoleSite, register

__all__ = ["ConsoleSite", "register"]
