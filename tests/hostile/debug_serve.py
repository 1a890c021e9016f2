"""``expert-router ARGS`` with every logger at DEBUG (the CLI has no flag for it), so the
secrets cases see everything the gateway and its libraries could log.

python debug_serve.py serve --config FILE --port P
"""

from __future__ import annotations

import logging
import sys

from expert_router.cli.main import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main(sys.argv[1:]))
