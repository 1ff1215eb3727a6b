"""``python -m ghnorth_cli`` and the ``ghnorth`` command.

The command line is imported inside :func:`main`, so that Ctrl-C during start-up (imports, building
the command tree) is one ``ghnorth: error: interrupted`` line and exit 130, like Ctrl-C later on.
"""

import os
import signal
import sys


def main() -> None:
    try:
        from ghnorth_cli.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:  # only during start-up: the command line reports later ones itself
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.stderr.write("ghnorth: error: interrupted\n")
        sys.stderr.flush()
        # Not sys.exit: half-imported libraries' exit hooks would print more (torch's FakeTensor cache
        # statistics) and the interpreter could report the interrupt as death by SIGINT; nothing of
        # ours needs cleaning up yet.
        os._exit(130)


if __name__ == "__main__":
    main()
