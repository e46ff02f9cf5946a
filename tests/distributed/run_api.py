"""Run under ``mpiexec -n N``: the tiny run (see tiny.py) in float64 through the API,
distributed with synchronised batch norm, for ``STOP`` epochs of 2 (``resume`` continues the
run in OUT). Usage: run_api.py OUT STOP [resume]."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from tiny import trainer  # noqa: E402

out, stop = sys.argv[1], int(sys.argv[2])
run = trainer(out, distributed=True, sync_bn=True)
if sys.argv[3:] == ["resume"]:
    run.resume()
run.fit(stop_after=stop)
