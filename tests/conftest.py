import os

# One torch thread per process, in this one and in the processes tests start (they inherit the variable): the
# autoencoder's matrices are small, and a second thread only adds synchronisation. Measured, README's 9-client run in
# process: 51 s with one thread vs 114 s with torch's default of one per core (2 here); and run_tests.sh runs two
# pytest processes side by side.
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
except ImportError:  # the board install's tests run without torch
    pass
