"""The UI process loads no torch (the UI image has none): every page, run as Streamlit runs it,
imports only the gRPC client side of the platform."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.ui.conftest import APP, closed_port_address

PAGES = ("search.py", "browse.py", "ingest.py", "evaluate.py", "train.py", "admin.py")
# Run in a fresh interpreter: the test process has torch loaded for the other tests.
RUN_EVERY_PAGE = """
import json, sys
from streamlit.testing.v1 import AppTest
for page in sys.argv[2:]:
    at = AppTest.from_file(sys.argv[1], default_timeout=60)
    at.switch_page(f"app_pages/{page}")
    at.run()
    assert not at.exception, (page, at.exception)
print(json.dumps(sorted(sys.modules)))
"""


def test_no_page_loads_torch() -> None:
    """Each page, shown with no server answering, leaves no torch (nor bench/) in sys.modules."""
    env = {**os.environ, "LOOKALIKE_CLIENT__ADDRESS": closed_port_address()}
    done = subprocess.run([sys.executable, "-c", RUN_EVERY_PAGE, str(APP), *PAGES], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    modules = json.loads(done.stdout.splitlines()[-1])
    assert "lookalike.services.client" in modules
    assert [m for m in modules if m.split(".")[0] in ("torch", "torchvision", "bench")] == []
