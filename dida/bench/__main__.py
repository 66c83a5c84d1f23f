"""``python -m dida.bench``: the benchmark command (``dida.bench.suites.main``)."""

import sys

from dida.bench.suites import main

sys.exit(main())
