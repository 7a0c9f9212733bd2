"""Small shared helpers with no model or data knowledge."""
