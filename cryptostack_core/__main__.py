"""``python -m cryptostack_core`` is the ``cryptostack`` command."""

import sys

from cryptostack_core.cli import main

sys.exit(main())
