"""The `lexora` command: production commands (`lexora migrate`, `lexora admin ...`) and, where
installed, `lexora dev`, the local platform (lexora_dev, imported only for that command)."""
