"""Neural building blocks and training utilities shared by several method plugins."""
