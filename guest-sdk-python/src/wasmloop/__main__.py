"""`python -m wasmloop build [app.py] [-o app.wasm]`."""

import sys

from wasmloop.build import main

sys.exit(main())
