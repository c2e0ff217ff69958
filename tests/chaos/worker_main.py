"""`reviewq worker` for a chaos run, as its own OS process: `python worker_main.py SPEC N`.

It runs what `reviewq worker --processes N` runs once its config is loaded: the
supervisor (`workers.supervisor.run_workers`) with its waker thread and N RQ worker
children, replacing any child that dies. Only the spec differs: it is read from a
pickle the harness wrote (a simulate run's spec, time-compressed), not built from a
config file. Being a plain process, it can be started under `faketime` and its
children SIGKILLed, which is what the chaos scenarios do.
"""

from __future__ import annotations

import logging
import pickle
import sys
from pathlib import Path


def main() -> int:
    from workers.supervisor import run_workers

    spec_path, processes = Path(sys.argv[1]), int(sys.argv[2])
    spec = pickle.loads(spec_path.read_bytes())
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    return run_workers(spec, processes, burst=False)


if __name__ == "__main__":
    sys.exit(main())
