"""``python -m customer_pipeline`` is the ``customer-pipeline`` command."""

from .cli import main

if __name__ == "__main__":
    main()
