"""The ``customer-pipeline`` command's entry point (also ``python -m customer_pipeline``).

It imports the command line itself, so that a Ctrl-C during start-up (imports, settings,
before the run's signal handlers are in place) exits 130 quietly instead of a traceback.
"""

import sys

EXIT_SIGINT = 130


def main() -> None:
    """Run the ``customer-pipeline`` command."""
    # httpx imports its own command line, and with it rich and pygments (~40 ms), whenever
    # they are installed; this process never runs it (encode/httpx#3547 would make it lazy).
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    try:
        from .cli import main as command

        command()
    except KeyboardInterrupt:
        if sys.stderr.isatty():
            sys.stderr.write("\n")  # end the terminal's ^C line
        sys.exit(EXIT_SIGINT)


if __name__ == "__main__":
    main()
