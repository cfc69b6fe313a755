"""`python -m spread <command>`: see `spread.cli`."""

from spread.cli import main

raise SystemExit(main())
