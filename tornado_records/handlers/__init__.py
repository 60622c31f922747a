"""HTTP handlers: thin layers that parse and validate a request, call the store, and render the answer."""
