"""Publishing the archive: an event's details, and its podcast feed."""
