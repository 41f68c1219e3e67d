"""Stand-in for the get-pip.py that ansible-test downloads from a host CI cannot reach.

ansible-test runs this file as __main__ inside the fresh virtualenv it made
for a sanity test, with pip-install arguments (`pip==24.2 --no-setuptools ...`).
Python's own ensurepip gives the venv a pip, which then installs what was asked
from the package index.
"""

import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
arguments = [argument for argument in sys.argv[1:] if argument not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install"] + arguments)
