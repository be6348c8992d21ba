"""The Clusterra console: the Django project that wires the apps together."""
