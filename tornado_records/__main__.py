"""`python -m tornado_records` is the same as the `tornado-records` command."""

from tornado_records.cli import main

if __name__ == "__main__":
    main()
