"""N-BaIoT data: registry, loaders, splits, synthetic generator and downloader (no FedML here)."""
