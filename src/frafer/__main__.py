"""`python -m frafer …` (what `torchrun -m frafer …` runs)."""

from frafer.cli import main

raise SystemExit(main())
