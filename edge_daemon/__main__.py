"""`python -m edge_daemon` runs the same CLI as the `edge-daemon` console script."""

from edge_daemon.cli import main

raise SystemExit(main())
