"""The figures of the table, one module each, named for its `--only` name (ping-busy: ping_busy.py): `run(bench)`
measures it and returns its rows. What they share is in bench/harness.py, bench/transfers.py and
bench/subscribers.py."""
