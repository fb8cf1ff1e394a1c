"""Ground floor, importable by every package: errors, console output, run directories and atomic
writes, the typed configuration. Imports nothing of FedIoT but the N-BaIoT facts (data.nbaiot)."""

# FedIoT's release; boards report it (with the git commit of a checkout) in their HEALTH messages
__version__ = "0.24.0"
