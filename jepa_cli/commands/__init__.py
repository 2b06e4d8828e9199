"""One module per command group; each imports heavy libraries only inside its commands."""
