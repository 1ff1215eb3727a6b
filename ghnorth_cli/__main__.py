"""``python -m ghnorth_cli`` and the ``ghnorth`` command.

The command line is imported inside :func:`main`, so that Ctrl-C during start-up (imports, building
the command tree) is one ``ghnorth: error: interrupted`` line and exit 130, like Ctrl-C later on.
"""

import sys


def main() -> None:
    try:
        from ghnorth_cli.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        sys.stderr.write("ghnorth: error: interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
