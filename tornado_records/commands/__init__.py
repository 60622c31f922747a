"""The commands beside the service (check, backup, migrate): they read a service's records through the storage
interface, on every engine, with the settings the service is given."""
