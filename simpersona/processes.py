"""Whether a process still runs: recovery code tells a dead writer's leftovers (a storefront's
write-ahead segments, a Dagster run left STARTED) from a live one's by its pid."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """True when a process with this pid exists on this machine (this one included; another
    user's counts as alive: it cannot be told apart, so it is left alone)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
