"""The `lexora` command: production commands (migrate, admin) and, where installed, `lexora dev`."""
