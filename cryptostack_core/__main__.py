"""``python -m cryptostack_core`` is the ``cryptostack`` command."""

import sys

from .cli import main

sys.exit(main())
