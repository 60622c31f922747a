"""A body on its way to a record: one concept (sink.py), three ways in (replace, appends, resumable)."""
