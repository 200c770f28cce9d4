"""``python -m node.cli ...``: the ``crossroads`` command."""

from node.cli import main

raise SystemExit(main())
