"""From packets to detection: pcap reading, N-BaIoT feature extraction, traffic simulation."""
