"""./python Tools/pycds/fuzz ARGS (or python -m fuzz from Tools/pycds)."""

import os
import sys

if not __package__:
    # run as a directory: sys.path[0] is this one, whose module names
    # would shadow others; import the package from its parent instead
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from fuzz import main  # noqa: E402

sys.exit(main())
