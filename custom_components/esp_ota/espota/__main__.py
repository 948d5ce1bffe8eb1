"""`python -m custom_components.esp_ota.espota` (or `python -m espota` where it is installed):
the library's command line, as the `espota` console script runs it."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
