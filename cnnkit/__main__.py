"""`python -m cnnkit`: Ctrl-C while the package itself imports is one line and exit 130 too
(cnnkit.cli.main covers everything after)."""

import sys

try:
    from cnnkit.cli import main
except KeyboardInterrupt:
    print("cnnkit: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
