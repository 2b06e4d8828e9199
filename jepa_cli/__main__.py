"""`python -m jepa_cli ...` (used under torchrun)."""

from jepa_cli.main import main

if __name__ == "__main__":
    main()
