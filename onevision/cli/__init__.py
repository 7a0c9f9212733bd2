"""Command-line faces of the framework; nothing imports this package."""
