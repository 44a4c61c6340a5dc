"""`python -m crossway.samples.model_server`."""

from crossway.samples.model_server.cli import main

main()
