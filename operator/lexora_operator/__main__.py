"""`python -m lexora_operator` / `lexora-operator`: run the ModelDeployment operator."""

from __future__ import annotations

import asyncio
import logging

from lexora_operator.app import connection_info, run_operator
from lexora_operator.settings import OperatorSettings
from lexora_runtime.logs import configure_logging


def main() -> None:
    settings = OperatorSettings()
    configure_logging("operator", settings.log_level)
    # kopf logs every successful handler and timer run at INFO: with a 30 s resync that is noise.
    logging.getLogger("kopf.objects").setLevel(max(logging.WARNING, logging.getLogger().level))
    asyncio.run(run_operator(settings, connection_info(settings)))


if __name__ == "__main__":
    main()
