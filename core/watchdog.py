"""`python -m core.watchdog PARENT_PID TAG`: stop PARENT's tagged children once PARENT is gone.

Started by core.processes (one per servetune process, in a session of its own) so that a
SIGKILLed or crashed servetune does not leave `bentoml serve`, its workers or Locust behind.
"""

from __future__ import annotations

import sys

from core.processes import watch


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[0].isdigit():
        print("usage: python -m core.watchdog PARENT_PID TAG", file=sys.stderr)
        return 2
    watch(int(argv[0]), argv[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
