"""`gac translate` under torchrun, with rank 0 holding back its COG writing until every other rank has exited.

Writing a full scene's COGs can take minutes; a rank left waiting at a barrier meanwhile fails at the collective
timeout. Here rank 0 waits (up to a minute) for the others' exit before writing: if any of them still waited on
rank 0 at a barrier, the run would stall and fail instead of finishing.

Run as `torchrun --nproc-per-node N tests/torchrun_rank0_writes_last.py <gac translate args>`, with
GAC_TEST_EXITED naming an empty directory where each rank > 0 leaves a file as it exits.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from pathlib import Path


def main() -> None:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    exited = Path(os.environ["GAC_TEST_EXITED"])
    if rank:
        atexit.register(lambda: (exited / str(rank)).touch())
    else:
        import gac.translate.run as run

        write = run.write_outputs

        def after_the_others(*args, **kwargs):
            deadline = time.time() + 60
            while len(list(exited.iterdir())) < world - 1:
                if time.time() > deadline:
                    raise SystemExit(
                        "rank 0: the other ranks are still running a minute after the last block; they wait on rank 0"
                    )
                time.sleep(0.05)
            return write(*args, **kwargs)

        run.write_outputs = after_the_others
    from stages.cli import main as gac

    sys.argv = ["gac", "translate", *sys.argv[1:]]
    gac()


if __name__ == "__main__":
    main()
