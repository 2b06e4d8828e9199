"""Rich rendering of core results; imported only when a command runs."""
