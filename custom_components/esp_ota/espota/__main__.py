"""`python -m custom_components.esp_ota.espota`: the library's command line."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
