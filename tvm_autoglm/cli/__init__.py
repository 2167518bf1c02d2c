"""The ``auto-glm`` command line; one module per sub-command (``cmd_<name>.py``)."""
