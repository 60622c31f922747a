"""Records and their content: the store, its index, its content engines (see store.py)."""
