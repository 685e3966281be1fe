"""chatd benchmark harness (issue 6): `python -m bench run [--quick] [--only SCENARIO]`."""
