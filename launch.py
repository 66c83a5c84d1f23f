"""Start DIDA Studio in the browser: ``python launch.py [--help]`` (the same as ``dida-studio``).

The command line lives in ``app.cli``; this file keeps the README's command working from a checkout.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from app.cli import run

    run()
