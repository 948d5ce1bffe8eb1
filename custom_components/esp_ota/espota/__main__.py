"""`python -m custom_components.esp_ota.espota`: the library's command line."""

from .cli import main

raise SystemExit(main())
