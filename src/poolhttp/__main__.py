"""`python -m poolhttp ...`: the `poolhttp` command."""

from .cli import main

raise SystemExit(main())
