"""`lexora`, the command line: `lexora migrate` and `lexora admin ...` (what a production image
runs), and `lexora dev`, the local platform (lexora_dev, imported only for that command)."""
