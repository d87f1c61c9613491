"""Allow ``python -m hydrogen`` (used by tests so they run the checkout's interpreter)."""

from hydrogen.cli import main

raise SystemExit(main())
