"""``python -m tvm_autoglm ...`` is the same as ``auto-glm ...``."""

import sys

from .cli.main import main

sys.exit(main())
