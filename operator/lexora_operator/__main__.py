"""`python -m lexora_operator` / `lexora-operator`: run the ModelDeployment operator."""

from __future__ import annotations

import asyncio

from lexora_operator.app import connection_info, run_operator
from lexora_operator.settings import OperatorSettings
from lexora_runtime.logs import configure_logging


def main() -> None:
    settings = OperatorSettings()
    configure_logging("operator", settings.log_level)
    asyncio.run(run_operator(settings, connection_info(settings)))


if __name__ == "__main__":
    main()
