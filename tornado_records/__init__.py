"""tornado-records: an HTTP service that stores the audio recordings of a radio station's broadcasts."""

__version__ = "0.1.0"
