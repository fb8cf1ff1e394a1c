"""The gRPC deployment on a LAN: launch of server and client processes, ipconfig CSV, gRPC transport."""
