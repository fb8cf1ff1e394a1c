"""Ground floor, importable by every package: errors, console output, run directories and atomic
writes, the typed configuration. Imports nothing of FedIoT but the N-BaIoT facts (data.nbaiot)."""
