"""``python -m npmobilenet.cli``: the same as the ``npmobilenet`` command."""

import sys

from . import main

sys.exit(main())
